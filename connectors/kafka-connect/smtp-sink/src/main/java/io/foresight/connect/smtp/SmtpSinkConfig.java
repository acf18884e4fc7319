package io.foresight.connect.smtp;

import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;

import jakarta.mail.internet.AddressException;
import jakarta.mail.internet.InternetAddress;

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
 * <p>The server, the account and the addresses are given as config provider references
 * ({@code ${file:<file>:<key>}}) by {@code foresight connect apply}: the password is a secret,
 * and the addresses are people's. The password and the recipients are {@link Type#PASSWORD}
 * settings, which Connect logs as {@code [hidden]}; log lines name the server by host and port.
 */
public final class SmtpSinkConfig extends AbstractConfig {

    public static final String HOST = "smtp.host";
    public static final String PORT = "smtp.port";
    public static final String SECURITY = "smtp.security";
    public static final String USERNAME = "smtp.username";
    public static final String PASSWORD = "smtp.password";
    public static final String FROM = "mail.from";
    public static final String TO = "mail.to";
    public static final String TIMEOUT_MS = "smtp.timeout.ms";
    public static final String RETRIES = "smtp.retries";
    public static final String RETRY_BACKOFF_MS = "smtp.retry.backoff.ms";

    /** How the connection is secured: none, STARTTLS (required), or TLS from the start. */
    public enum Security { NONE, STARTTLS, SSL }

    private static final String GROUP = "SMTP";

    public static final ConfigDef CONFIG_DEF = new ConfigDef()
            .define(HOST, Type.STRING, ConfigDef.NO_DEFAULT_VALUE, new ConfigDef.NonEmptyString(),
                    Importance.HIGH, "SMTP server host name or address.", GROUP, 1, Width.MEDIUM, "Host")
            .define(PORT, Type.INT, 587, ConfigDef.Range.between(1, 65535), Importance.HIGH,
                    "SMTP server port: 587 (submission, STARTTLS), 465 (TLS), 25.", GROUP, 2, Width.SHORT, "Port")
            .define(SECURITY, Type.STRING, "starttls",
                    ConfigDef.CaseInsensitiveValidString.in("none", "starttls", "ssl"), Importance.HIGH,
                    "none: plain text (a relay on the same host only); starttls: upgrade the connection "
                            + "with STARTTLS, and refuse a server that does not offer it; ssl: TLS from the "
                            + "first byte (port 465). Server certificates are checked with the JVM's trust store.",
                    GROUP, 3, Width.SHORT, "Security")
            .define(USERNAME, Type.STRING, "", Importance.MEDIUM,
                    "Account to authenticate as (empty: no authentication).", GROUP, 4, Width.MEDIUM, "User")
            .define(PASSWORD, Type.PASSWORD, "", Importance.MEDIUM,
                    "The account's password. A secret: hidden in logs.", GROUP, 5, Width.MEDIUM, "Password")
            .define(FROM, Type.STRING, ConfigDef.NO_DEFAULT_VALUE, new AddressValidator(false), Importance.HIGH,
                    "Sender address, e.g. 'Foresight <alerts@example.com>'.", GROUP, 6, Width.LONG, "From")
            .define(TO, Type.PASSWORD, ConfigDef.NO_DEFAULT_VALUE, new AddressValidator(true), Importance.HIGH,
                    "Recipients, comma separated. Hidden in logs (people's addresses).", GROUP, 7, Width.LONG, "To")
            .define(TIMEOUT_MS, Type.INT, 10_000, ConfigDef.Range.atLeast(1), Importance.LOW,
                    "Connect, read and write timeout of the SMTP conversation, in milliseconds.",
                    GROUP, 8, Width.SHORT, "Timeout (ms)")
            .define(RETRIES, Type.INT, 5, ConfigDef.Range.atLeast(0), Importance.LOW,
                    "Retries of one mail after a connection error, a timeout or a transient (4xx) reply, "
                            + "with exponential backoff. When they run out the task throws "
                            + "RetriableException once (Connect redelivers the batch), and fails with "
                            + "ConnectException if the redelivery fails as well.",
                    GROUP, 9, Width.SHORT, "Retries")
            .define(RETRY_BACKOFF_MS, Type.LONG, 500L, ConfigDef.Range.atLeast(0), Importance.LOW,
                    "Backoff before the first retry, in milliseconds; doubled on every further retry and "
                            + "capped at " + SmtpSinkTask.MAX_BACKOFF_MS + " ms.",
                    GROUP, 10, Width.SHORT, "Retry backoff (ms)");

    public SmtpSinkConfig(java.util.Map<String, String> props) {
        super(CONFIG_DEF, props);
    }

    public String host() {
        return getString(HOST);
    }

    public int port() {
        return getInt(PORT);
    }

    public Security security() {
        return Security.valueOf(getString(SECURITY).toUpperCase(Locale.ROOT));
    }

    public String username() {
        return getString(USERNAME);
    }

    public String password() {
        return getPassword(PASSWORD).value();
    }

    public InternetAddress from() {
        return parse(getString(FROM), false).get(0);
    }

    public List<InternetAddress> to() {
        return parse(getPassword(TO).value(), true);
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

    /** "smtp://host:port (starttls)": the server as logs show it. */
    public String loggableServer() {
        return "smtp://" + host() + ":" + port() + " (" + getString(SECURITY).toLowerCase(Locale.ROOT) + ")";
    }

    private static List<InternetAddress> parse(String text, boolean many) {
        try {
            InternetAddress[] addresses = InternetAddress.parse(text, true);
            if (addresses.length == 0 || (!many && addresses.length > 1)) {
                throw new AddressException(many ? "no address" : "one address expected");
            }
            List<InternetAddress> out = new ArrayList<>(addresses.length);
            for (InternetAddress address : addresses) {
                address.validate();
                out.add(address);
            }
            return out;
        } catch (AddressException e) {
            throw new IllegalArgumentException(e.getMessage(), e);
        }
    }

    /** The jar's version, written into foresight-smtp-sink.properties by Maven resource filtering. */
    public static String version() {
        try (InputStream in = SmtpSinkConfig.class.getResourceAsStream("/foresight-smtp-sink.properties")) {
            if (in != null) {
                Properties p = new Properties();
                p.load(in);
                String v = p.getProperty("version");
                if (v != null && !v.isBlank() && !v.startsWith("$")) {
                    return v;
                }
            }
        } catch (IOException ignored) {
            // fall through
        }
        return "unknown";
    }

    /** RFC 822 addresses (one, or a comma-separated list); never quotes a refused value. */
    private static final class AddressValidator implements ConfigDef.Validator {
        private final boolean many;

        AddressValidator(boolean many) {
            this.many = many;
        }

        @Override
        public void ensureValid(String name, Object value) {
            String text = value instanceof Password ? ((Password) value).value() : (String) value;
            if (text == null || text.isBlank()) {
                throw new ConfigException(name, Password.HIDDEN, "an address is required");
            }
            if (text.startsWith("${")) {
                throw new ConfigException(name, Password.HIDDEN, "a config provider reference the worker did "
                        + "not resolve: check config.providers and the secrets file");
            }
            try {
                parse(text, many);
            } catch (IllegalArgumentException e) {
                throw new ConfigException(name, Password.HIDDEN,
                        (many ? "comma-separated e-mail addresses" : "one e-mail address") + " expected: "
                                + e.getMessage());
            }
        }

        @Override
        public String toString() {
            return many ? "comma-separated e-mail addresses" : "an e-mail address";
        }
    }
}
