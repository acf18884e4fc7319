package io.foresight.connect.http;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.Config;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigValue;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.sink.SinkConnector;

/**
 * Kafka Connect sink that sends record values to one HTTP endpoint (webhooks, Slack, PagerDuty,
 * Alertmanager). Stateless: every task gets the same settings and handles its share of the
 * topic partitions.
 */
public class HttpSinkConnector extends SinkConnector {

    private Map<String, String> props;

    @Override
    public void start(Map<String, String> props) {
        new HttpSinkConfig(props); // fail fast on a bad config
        this.props = Map.copyOf(props);
    }

    @Override
    public Class<? extends Task> taskClass() {
        return HttpSinkTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        List<Map<String, String>> configs = new ArrayList<>(maxTasks);
        for (int i = 0; i < maxTasks; i++) {
            configs.add(props);
        }
        return configs;
    }

    @Override
    public void stop() {
        // nothing to release
    }

    /** ConfigDef's checks, plus the one across two settings: an inserted body field needs its value. */
    @Override
    public Config validate(Map<String, String> connectorConfigs) {
        Config config = super.validate(connectorConfigs);
        String field = connectorConfigs.getOrDefault(HttpSinkConfig.INSERT_FIELD, "");
        String value = connectorConfigs.getOrDefault(HttpSinkConfig.INSERT_VALUE, "");
        if (field.isBlank() != value.isEmpty()) {
            for (ConfigValue configValue : config.configValues()) {
                if (configValue.name().equals(HttpSinkConfig.INSERT_VALUE)) {
                    configValue.addErrorMessage(HttpSinkConfig.INSERT_FIELD + " and "
                            + HttpSinkConfig.INSERT_VALUE + " go together: set both or neither");
                }
            }
        }
        return config;
    }

    @Override
    public ConfigDef config() {
        return HttpSinkConfig.CONFIG_DEF;
    }

    @Override
    public String version() {
        return HttpSinkConfig.version();
    }
}
