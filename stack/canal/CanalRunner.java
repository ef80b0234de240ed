// Runs Alibaba Canal 1.1.7 for the local stack: one Canal instance per destination, each
// following the MariaDB binlog and publishing to Kafka through Canal's own Kafka connector.
//
// Canal's launcher (canal.deployer, with its Spring XML instance files) is not on Maven Central
// for 1.1.7, so this file stands in for it. It reads the same configuration keys as Canal's
// deployer (canal.properties, then <destination>/instance.properties on top of it) and builds
// each instance in code with CanalInstanceWithManager: file-based meta (positions survive a
// restart), memory store, no table-meta TSDB, no TCP server, no admin or metrics port. It
// opens no listening socket at all: Canal only connects out, to MariaDB and Kafka.
//
// Run by stack/canal.sh as a single-file source program:
//   java -cp 'libs/*' CanalRunner.java CONF_DIR
import com.alibaba.otter.canal.connector.kafka.producer.CanalKafkaProducer;
import com.alibaba.otter.canal.instance.core.CanalMQConfig;
import com.alibaba.otter.canal.instance.manager.CanalInstanceWithManager;
import com.alibaba.otter.canal.instance.manager.model.Canal;
import com.alibaba.otter.canal.instance.manager.model.CanalParameter;
import com.alibaba.otter.canal.server.CanalMQStarter;
import com.alibaba.otter.canal.server.embedded.CanalServerWithEmbedded;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

public class CanalRunner {

    private static final Logger LOG = LoggerFactory.getLogger("esupdater.stack.CanalRunner");

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: java -cp 'libs/*' CanalRunner.java CONF_DIR");
            System.exit(2);
        }
        File conf = new File(args[0]);
        Properties global = load(new File(conf, "canal.properties"));
        String mode = required(global, "canal.serverMode", "canal.properties");
        if (!"kafka".equalsIgnoreCase(mode)) {
            throw new IllegalArgumentException("canal.serverMode must be kafka here, not " + mode);
        }
        List<String> destinations = new ArrayList<>();
        for (String name : required(global, "canal.destinations", "canal.properties").split(",")) {
            if (!name.isBlank()) {
                destinations.add(name.trim());
            }
        }

        CanalServerWithEmbedded server = CanalServerWithEmbedded.instance();
        Map<String, Properties> configs = new java.util.LinkedHashMap<>();
        for (String destination : destinations) {
            Properties merged = new Properties();
            merged.putAll(global);
            merged.putAll(load(new File(new File(conf, destination), "instance.properties")));
            configs.put(destination, merged);
            ensureTopic(merged, destination);
        }
        server.setCanalInstanceGenerator(destination -> instance(destination, configs.get(destination)));
        server.start();

        // One producer per destination, so flatMessage and the other producer settings may
        // differ between destinations (a flat and a protobuf topic side by side). All are
        // initialised before any starts: CanalMQStarter.start sets the system property
        // canal.instance.filter.transaction.entry, and Canal reads system properties before
        // the given ones (PropertiesUtils), so a later init would inherit it.
        List<CanalKafkaProducer> producers = new ArrayList<>();
        for (String destination : destinations) {
            server.start(destination);
            CanalKafkaProducer producer = new CanalKafkaProducer();
            producer.init(configs.get(destination));
            producers.add(producer);
        }
        for (int i = 0; i < destinations.size(); i++) {
            String destination = destinations.get(i);
            new CanalMQStarter(producers.get(i)).start(destination);
            LOG.info("## destination {} -> topic {} (flatMessage={}, filterTransactionEntry={})",
                destination, configs.get(destination).getProperty("canal.mq.topic"),
                producers.get(i).getMqProperties().isFlatMessage(),
                producers.get(i).getMqProperties().isFilterTransactionEntry());
        }

        CountDownLatch stopped = new CountDownLatch(1);
        // CanalMQStarter adds its own hook that stops its producer; this one stops the
        // instances, which flushes their binlog positions to the meta files.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            LOG.info("## stopping canal");
            for (String destination : destinations) {
                try {
                    server.stop(destination);
                } catch (RuntimeException e) {
                    LOG.warn("## stopping destination " + destination + " failed", e);
                }
            }
            server.stop();
            LOG.info("## canal stopped");
            stopped.countDown();
        }, "canal-runner-stop"));
        LOG.info("## canal is running: destinations {}", destinations);
        stopped.await();
    }

    /** A Canal instance from Canal's own instance.properties keys. */
    private static CanalInstanceWithManager instance(String destination, Properties p) {
        String where = destination + "/instance.properties";
        CanalParameter parameter = new CanalParameter();
        parameter.setSourcingType(CanalParameter.SourcingType.MYSQL);
        String[] address = required(p, "canal.instance.master.address", where).split(":");
        parameter.setDbAddresses(List.of(new InetSocketAddress(address[0], Integer.parseInt(address[1]))));
        parameter.setDbUsername(required(p, "canal.instance.dbUsername", where));
        parameter.setDbPassword(required(p, "canal.instance.dbPassword", where));
        parameter.setConnectionCharset(p.getProperty("canal.instance.connectionCharset", "UTF-8"));
        // Each destination is one replica to the server: ids must differ from each other and
        // from the server's own server_id, or the server drops the older connection.
        parameter.setSlaveId(Long.parseLong(required(p, "canal.instance.mysql.slaveId", where)));
        // Positions are kept in DATA_DIR/<destination>/meta.dat and read again at start.
        parameter.setMetaMode(CanalParameter.MetaMode.LOCAL_FILE);
        parameter.setDataDir(required(p, "canal.file.data.dir", where));
        parameter.setMetaFileFlushPeriod(Integer.parseInt(p.getProperty("canal.file.flush.period", "1000")));
        parameter.setIndexMode(CanalParameter.IndexMode.MEMORY_META_FAILBACK);
        parameter.setStorageMode(CanalParameter.StorageMode.MEMORY);
        parameter.setMemoryStorageBufferSize(Integer.parseInt(p.getProperty("canal.instance.memory.buffer.size", "16384")));
        // The Kafka producer parses entries anyway; raw ByteStrings would be parsed twice.
        parameter.setMemoryStorageRawEntry(false);
        parameter.setHaMode(CanalParameter.HAMode.HEARTBEAT);
        // The heartbeat switches between master and standby; there is no standby here.
        parameter.setDetectingEnable(false);
        // Table metadata comes from the live server (SHOW CREATE TABLE); the TSDB that
        // replays DDL history needs Canal's Spring files and a database of its own.
        parameter.setTsdbEnable(false);
        parameter.setGtidEnable(false);
        parameter.setBlackFilter(p.getProperty("canal.instance.filter.black.regex", ""));

        Canal canal = new Canal();
        canal.setId((long) (destination.hashCode() & 0x7fffffff));
        canal.setName(destination);
        canal.setCanalParameter(parameter);

        CanalMQConfig mq = new CanalMQConfig();
        mq.setTopic(required(p, "canal.mq.topic", where));
        mq.setPartitionsNum(Integer.parseInt(p.getProperty("canal.mq.partitionsNum", "1")));
        mq.setPartitionHash(blankToNull(p.getProperty("canal.mq.partitionHash")));
        mq.setDynamicTopic(blankToNull(p.getProperty("canal.mq.dynamicTopic")));
        mq.setDynamicTopicPartitionNum(blankToNull(p.getProperty("canal.mq.dynamicTopicPartitionNum")));
        String partition = blankToNull(p.getProperty("canal.mq.partition"));
        mq.setPartition(partition == null ? null : Integer.valueOf(partition));
        return new Instance(canal, p.getProperty("canal.instance.filter.regex", ".*\\..*"), mq);
    }

    /** CanalInstanceWithManager without Spring: the MQ settings are set here, not injected. */
    static final class Instance extends CanalInstanceWithManager {
        Instance(Canal canal, String filter, CanalMQConfig mq) {
            super(canal, filter);
            this.mqConfig = mq;
        }
    }

    /**
     * Creates the destination's topic with canal.mq.partitionsNum partitions if it is missing
     * (the local broker does not auto-create topics). Canal picks partitions by number, so a
     * topic with fewer partitions than that is an error, not something to guess around.
     */
    private static void ensureTopic(Properties p, String destination) throws Exception {
        String topic = required(p, "canal.mq.topic", destination + "/instance.properties");
        int partitions = Integer.parseInt(p.getProperty("canal.mq.partitionsNum", "1"));
        Properties admin = new Properties();
        admin.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, required(p, "kafka.bootstrap.servers", "canal.properties"));
        try (Admin client = Admin.create(admin)) {
            Set<String> names = client.listTopics().names().get();
            if (!names.contains(topic)) {
                LOG.info("## creating topic {} with {} partitions", topic, partitions);
                client.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
                return;
            }
            TopicDescription found = client.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            if (found.partitions().size() < partitions) {
                throw new IllegalStateException("topic " + topic + " has " + found.partitions().size()
                    + " partitions but canal.mq.partitionsNum of " + destination + " is " + partitions
                    + ": delete the topic or lower partitionsNum");
            }
        }
    }

    private static Properties load(File file) throws IOException {
        Properties properties = new Properties();
        try (InputStream in = new FileInputStream(file)) {
            properties.load(in);
        }
        return properties;
    }

    private static String required(Properties p, String key, String where) {
        String value = p.getProperty(key);
        if (value == null || value.isBlank()) {
            throw new IllegalArgumentException("missing " + key + " in " + where);
        }
        return value.trim();
    }

    private static String blankToNull(String value) {
        return value == null || value.isBlank() ? null : value.trim();
    }
}
