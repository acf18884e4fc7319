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

/** The connector's settings, parsed and validated once. */
public final class HttpSinkConfig extends AbstractConfig {

    public static final String URL = "http.url";
    public static final String METHOD = "http.method";
    public static final String HEADERS = "http.headers";
    public static final String TIMEOUT_MS = "http.timeout.ms";
    public static final String RETRIES = "http.retries";
    public static final String RETRY_BACKOFF_MS = "http.retry.backoff.ms";
    public static final String BATCH_JSON_ARRAY = "http.batch.json.array";

    private static final String GROUP = "HTTP";

    /** Headers java.net.http.HttpClient sets itself and refuses from callers. */
    private static final Set<String> RESTRICTED_HEADERS =
            Set.of("connection", "content-length", "expect", "host", "upgrade");

    public static final ConfigDef CONFIG_DEF = new ConfigDef()
            .define(URL, Type.STRING, ConfigDef.NO_DEFAULT_VALUE, new UrlValidator(), Importance.HIGH,
                    "Absolute http:// or https:// URL every request goes to, e.g. "
                            + "http://alertmanager:9093/api/v2/alerts.",
                    GROUP, 1, Width.LONG, "URL")
            .define(METHOD, Type.STRING, "POST", ConfigDef.CaseInsensitiveValidString.in("POST", "PUT"),
                    Importance.MEDIUM, "HTTP method: POST or PUT.", GROUP, 2, Width.SHORT, "Method")
            .define(HEADERS, Type.STRING, "", new HeadersValidator(), Importance.MEDIUM,
                    "Extra request headers as comma-separated Name:Value pairs, e.g. "
                            + "'Content-Type:application/json,Authorization:Token abc'. A value may not "
                            + "contain a comma. Content-Type defaults to application/json when not given. "
                            + "Connection, Content-Length, Expect, Host and Upgrade are set by the client "
                            + "and rejected here.",
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
                    GROUP, 7, Width.SHORT, "Batch as JSON array");

    private final Map<String, String> headers;

    public HttpSinkConfig(Map<String, String> props) {
        super(CONFIG_DEF, props);
        this.headers = parseHeaders(getString(HEADERS));
    }

    public URI url() {
        return URI.create(getString(URL).trim());
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

    /** Parses "Name:Value,Name2:Value2"; splits each pair at its first colon. */
    static Map<String, String> parseHeaders(String spec) {
        Map<String, String> out = new LinkedHashMap<>();
        if (spec == null || spec.isBlank()) {
            return out;
        }
        for (String pair : spec.split(",")) {
            if (pair.isBlank()) {
                continue;
            }
            int colon = pair.indexOf(':');
            if (colon <= 0) {
                throw new ConfigException(HEADERS, spec, "expected Name:Value, got '" + pair.trim() + "'");
            }
            String name = pair.substring(0, colon).trim();
            String value = pair.substring(colon + 1).trim();
            if (name.isEmpty() || !name.chars().allMatch(HttpSinkConfig::isTokenChar)) {
                throw new ConfigException(HEADERS, spec, "invalid header name '" + name + "'");
            }
            if (RESTRICTED_HEADERS.contains(name.toLowerCase(Locale.ROOT))) {
                throw new ConfigException(HEADERS, spec, "header '" + name + "' is set by the HTTP client");
            }
            out.put(name, value);
        }
        return out;
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
            String s = value == null ? "" : value.toString().trim();
            try {
                URI uri = new URI(s);
                String scheme = uri.getScheme() == null ? "" : uri.getScheme().toLowerCase(Locale.ROOT);
                if (!(scheme.equals("http") || scheme.equals("https")) || uri.getHost() == null) {
                    throw new ConfigException(name, value, "must be an absolute http:// or https:// URL");
                }
            } catch (URISyntaxException e) {
                throw new ConfigException(name, value, "not a valid URL: " + e.getMessage());
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
            parseHeaders(value == null ? "" : value.toString());
        }

        @Override
        public String toString() {
            return "comma-separated Name:Value pairs";
        }
    }
}
