package io.foresight.connect.http;

import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.URISyntaxException;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Type;
import org.apache.kafka.common.config.ConfigDef.Width;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.config.types.Password;

/**
 * The connector's settings, parsed and validated once.
 *
 * <p>The URL, the headers and the inserted body field's value may carry secrets (a Slack or
 * webhook token in the URL, an Authorization header, PagerDuty's routing key), so they are
 * {@link Type#PASSWORD} settings: Connect logs them as {@code [hidden]}, and validation errors
 * never quote them. Give them as config provider references ({@code ${file:<file>:<key>}}) and
 * the connector config in Kafka holds only the reference.
 */
public final class HttpSinkConfig extends AbstractConfig {

    public static final String URL = "http.url";
    public static final String METHOD = "http.method";
    public static final String HEADERS = "http.headers";
    public static final String TIMEOUT_MS = "http.timeout.ms";
    public static final String RETRIES = "http.retries";
    public static final String RETRY_BACKOFF_MS = "http.retry.backoff.ms";
    public static final String BATCH_JSON_ARRAY = "http.batch.json.array";
    public static final String INSERT_FIELD = "http.body.insert.field";
    public static final String INSERT_VALUE = "http.body.insert.value";

    private static final String GROUP = "HTTP";

    /** Headers java.net.http.HttpClient sets itself and refuses from callers. */
    private static final Set<String> RESTRICTED_HEADERS =
            Set.of("connection", "content-length", "expect", "host", "upgrade");

    public static final ConfigDef CONFIG_DEF = new ConfigDef()
            .define(URL, Type.PASSWORD, ConfigDef.NO_DEFAULT_VALUE, new UrlValidator(), Importance.HIGH,
                    "Absolute http:// or https:// URL every request goes to, e.g. "
                            + "http://alertmanager:9093/api/v2/alerts. A secret (its path or query may "
                            + "carry a token): hidden in logs, which show only its scheme, host and port.",
                    GROUP, 1, Width.LONG, "URL")
            .define(METHOD, Type.STRING, "POST", ConfigDef.CaseInsensitiveValidString.in("POST", "PUT"),
                    Importance.MEDIUM, "HTTP method: POST or PUT.", GROUP, 2, Width.SHORT, "Method")
            .define(HEADERS, Type.PASSWORD, "", new HeadersValidator(), Importance.MEDIUM,
                    "Extra request headers as comma-separated Name:Value pairs, e.g. "
                            + "'Content-Type:application/json,Authorization:Token abc'. A value may not "
                            + "contain a comma. Content-Type defaults to application/json when not given. "
                            + "Connection, Content-Length, Expect, Host and Upgrade are set by the client "
                            + "and rejected here. A secret (values may be credentials): hidden in logs.",
                    GROUP, 3, Width.LONG, "Headers")
            .define(TIMEOUT_MS, Type.INT, 10_000, ConfigDef.Range.atLeast(1), Importance.LOW,
                    "Connect timeout and per-request response timeout, in milliseconds.",
                    GROUP, 4, Width.SHORT, "Timeout (ms)")
            .define(RETRIES, Type.INT, 5, ConfigDef.Range.atLeast(0), Importance.LOW,
                    "Retries of one request after a connection error, a timeout, a 5xx or a 429, "
                            + "with exponential backoff. When they run out the task throws "
                            + "RetriableException once (Connect redelivers the batch), and fails with "
                            + "ConnectException if the redelivery fails as well.",
                    GROUP, 5, Width.SHORT, "Retries")
            .define(RETRY_BACKOFF_MS, Type.LONG, 500L, ConfigDef.Range.atLeast(0), Importance.LOW,
                    "Backoff before the first retry, in milliseconds; doubled on every further retry "
                            + "and capped at " + HttpSinkTask.MAX_BACKOFF_MS + " ms.",
                    GROUP, 6, Width.SHORT, "Retry backoff (ms)")
            .define(BATCH_JSON_ARRAY, Type.BOOLEAN, false, Importance.MEDIUM,
                    "false: one request per record, the record value is the body. true: one request "
                            + "per batch handed to the task, the body is a JSON array of the record values "
                            + "(Alertmanager's /api/v2/alerts takes an array). String and byte[] values are "
                            + "then taken to be JSON text already.",
                    GROUP, 7, Width.SHORT, "Batch as JSON array")
            .define(INSERT_FIELD, Type.STRING, "", Importance.MEDIUM,
                    "A top-level field set in every request body, e.g. routing_key for PagerDuty; "
                            + "empty: none. Record values must then be JSON objects (JsonConverter with "
                            + "schemas.enable=false). For a secret that must stay out of Kafka and the logs.",
                    GROUP, 8, Width.MEDIUM, "Inserted body field")
            .define(INSERT_VALUE, Type.PASSWORD, "", Importance.MEDIUM,
                    "The string value of " + INSERT_FIELD + ". A secret: hidden in logs.",
                    GROUP, 9, Width.MEDIUM, "Inserted body value");

    private final Map<String, String> headers;

    public HttpSinkConfig(Map<String, String> props) {
        super(CONFIG_DEF, props);
        this.headers = parseHeaders(getPassword(HEADERS).value());
    }

    public URI url() {
        return URI.create(getPassword(URL).value().trim());
    }

    /** The URL without user info, path or query, which may carry tokens: safe to log. */
    public String loggableUrl() {
        URI uri = url();
        String port = uri.getPort() < 0 ? "" : ":" + uri.getPort();
        boolean more = (uri.getRawPath() != null && !uri.getRawPath().isEmpty() && !uri.getRawPath().equals("/"))
                || uri.getRawQuery() != null;
        return uri.getScheme() + "://" + uri.getHost() + port + (more ? "/..." : "");
    }

    public String method() {
        return getString(METHOD).trim().toUpperCase(Locale.ROOT);
    }

    /** Configured headers in their given order; names keep their case. */
    public Map<String, String> headers() {
        return headers;
    }

    public int timeoutMs() {
        return getInt(TIMEOUT_MS);
    }

    public int retries() {
        return getInt(RETRIES);
    }

    public long retryBackoffMs() {
        return getLong(RETRY_BACKOFF_MS);
    }

    public boolean batchJsonArray() {
        return getBoolean(BATCH_JSON_ARRAY);
    }

    /** The field set in every body, or empty when none is. */
    public String insertField() {
        return getString(INSERT_FIELD).trim();
    }

    public String insertValue() {
        return getPassword(INSERT_VALUE).value();
    }

    /**
     * Parses "Name:Value,Name2:Value2"; splits each pair at its first colon. Errors name the pair
     * by position and never quote a value, which may be a credential.
     */
    static Map<String, String> parseHeaders(String spec) {
        Map<String, String> out = new LinkedHashMap<>();
        if (spec == null || spec.isBlank()) {
            return out;
        }
        String[] pairs = spec.split(",");
        for (int i = 0; i < pairs.length; i++) {
            String pair = pairs[i];
            if (pair.isBlank()) {
                continue;
            }
            int colon = pair.indexOf(':');
            if (colon <= 0) {
                throw invalidHeaders("header " + (i + 1) + " is not Name:Value");
            }
            String name = pair.substring(0, colon).trim();
            String value = pair.substring(colon + 1).trim();
            if (name.isEmpty() || !name.chars().allMatch(HttpSinkConfig::isTokenChar)) {
                throw invalidHeaders("header " + (i + 1) + " has an invalid name");
            }
            if (RESTRICTED_HEADERS.contains(name.toLowerCase(Locale.ROOT))) {
                throw invalidHeaders("header '" + name + "' is set by the HTTP client");
            }
            out.put(name, value);
        }
        return out;
    }

    private static ConfigException invalidHeaders(String reason) {
        return new ConfigException(HEADERS, Password.HIDDEN, reason);
    }

    /** A PASSWORD setting's text as the validator sees it (a Password, or a String in unit use). */
    private static String text(Object value) {
        if (value instanceof Password) {
            return ((Password) value).value();
        }
        return value == null ? "" : value.toString();
    }

    private static boolean isTokenChar(int c) {
        // RFC 7230 token characters.
        return c > 32 && c < 127 && "()<>@,;:\\\"/[]?={}".indexOf(c) < 0;
    }

    /** The jar's version, written into foresight-http-sink.properties by Maven resource filtering. */
    public static String version() {
        try (InputStream in = HttpSinkConfig.class.getResourceAsStream("/foresight-http-sink.properties")) {
            if (in != null) {
                Properties p = new Properties();
                p.load(in);
                String v = p.getProperty("version");
                if (v != null && !v.isBlank() && !v.startsWith("${")) {
                    return v.trim();
                }
            }
        } catch (IOException ignored) {
            // fall through to "unknown"
        }
        return "unknown";
    }

    private static final class UrlValidator implements ConfigDef.Validator {
        @Override
        public void ensureValid(String name, Object value) {
            String s = text(value).trim();
            if (s.startsWith("${") && s.endsWith("}")) {
                // A reference is not a secret, and the worker left it unresolved: say so.
                throw new ConfigException(name, s, "a config provider reference the worker did not resolve: "
                        + "enable the provider in the worker config (config.providers) and check that the "
                        + "file and key exist within its allowed.paths");
            }
            try {
                URI uri = new URI(s);
                String scheme = uri.getScheme() == null ? "" : uri.getScheme().toLowerCase(Locale.ROOT);
                if (!(scheme.equals("http") || scheme.equals("https")) || uri.getHost() == null) {
                    throw new ConfigException(name, Password.HIDDEN, "must be an absolute http:// or https:// URL");
                }
            } catch (URISyntaxException e) {
                throw new ConfigException(name, Password.HIDDEN,
                        "not a valid URL: " + e.getReason() + " at index " + e.getIndex());
            }
        }

        @Override
        public String toString() {
            return "absolute http(s) URL";
        }
    }

    private static final class HeadersValidator implements ConfigDef.Validator {
        @Override
        public void ensureValid(String name, Object value) {
            parseHeaders(text(value));
        }

        @Override
        public String toString() {
            return "comma-separated Name:Value pairs";
        }
    }
}
