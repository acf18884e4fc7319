package io.foresight.connect.smtp;

import java.util.Collection;
import java.util.Date;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.regex.Pattern;

import jakarta.mail.AuthenticationFailedException;
import jakarta.mail.Message;
import jakarta.mail.MessagingException;
import jakarta.mail.Session;
import jakarta.mail.Transport;
import jakarta.mail.internet.InternetAddress;
import jakarta.mail.internet.MimeMessage;

import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.sink.ErrantRecordReporter;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.eclipse.angus.mail.smtp.SMTPAddressFailedException;
import org.eclipse.angus.mail.smtp.SMTPSendFailedException;
import org.eclipse.angus.mail.smtp.SMTPSenderFailedException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Sends each record as one e-mail. A value is a JSON object (JsonConverter, schemas off):
 * {@code subject} and {@code text} (plain text, UTF-8), and {@code headers}, a map of extra
 * headers (Foresight sets {@code Message-ID}, and {@code In-Reply-To}/{@code References} on a
 * RESOLVED mail so it threads under its FIRING one; a redelivered record is the same mail).
 *
 * <p>Delivery is at-least-once: put() returns only after every mail in it was accepted by the
 * server (or its record was handed to the dead letter queue), so the offsets Connect commits
 * afterwards are safe.
 *
 * <p>Failure policy, per mail:
 * <ul>
 *   <li>Accepted (2xx): done.</li>
 *   <li>A connection error, a timeout, or a transient reply (4xx: greylisting, a full queue):
 *       retried up to {@code smtp.retries} times with exponential backoff; when they run out,
 *       put() throws {@link RetriableException} once (Connect redelivers the batch, and mails
 *       already accepted from it are not sent twice), and {@link ConnectException} if the
 *       redelivery fails as well, so a server down for good shows as a FAILED task.</li>
 *   <li>A permanent reply (5xx: an unknown recipient, a refused sender, a message refused) and a
 *       value that is not a mail: the record goes to Connect's {@link ErrantRecordReporter}, so
 *       with {@code errors.tolerance=all} and a DLQ topic it lands there with the reason, and the
 *       task moves on.</li>
 *   <li>Authentication refused: the task fails at once; every mail would be refused the same.</li>
 * </ul>
 *
 * <p>Logs name the server by host, port and security, never the account, the password or the
 * recipients.
 */
public class SmtpSinkTask extends SinkTask {

    private static final Logger log = LoggerFactory.getLogger(SmtpSinkTask.class);

    /** Upper bound of one backoff sleep, so a retry loop stays well inside max.poll.interval.ms. */
    static final long MAX_BACKOFF_MS = 30_000L;
    private static final Pattern ADDRESS = Pattern.compile("<?[^\\s<>@]+@[^\\s<>]+>?");

    private SmtpSinkConfig config;
    private Session session;
    private InternetAddress from;
    private InternetAddress[] to;
    private String server;
    private ErrantRecordReporter reporter;
    private Transport transport;

    /** True after put() threw RetriableException, until a put() completes. */
    private boolean redelivering;
    /** Records of the pending (redelivered) batch already accepted by the server. */
    private final Set<String> deliveredInPendingBatch = new HashSet<>();

    @Override
    public String version() {
        return SmtpSinkConfig.version();
    }

    @Override
    public void start(Map<String, String> props) {
        config = new SmtpSinkConfig(props);
        from = config.from();
        to = config.to().toArray(new InternetAddress[0]);
        server = config.loggableServer();
        session = Session.getInstance(sessionProperties(config));
        try {
            reporter = context.errantRecordReporter(); // null unless a DLQ or error log is configured
        } catch (NoSuchMethodError | NoClassDefFoundError e) {
            reporter = null; // worker older than Kafka 2.6
        }
        redelivering = false;
        deliveredInPendingBatch.clear();
        log.info("SMTP sink task started: {} ({} recipients, authenticated: {}, retries: {}, DLQ reporter: {})",
                server, to.length, !config.username().isEmpty(), config.retries(), reporter != null);
    }

    static Properties sessionProperties(SmtpSinkConfig config) {
        String timeout = Integer.toString(config.timeoutMs());
        Properties props = new Properties();
        props.put("mail.transport.protocol", "smtp");
        props.put("mail.smtp.host", config.host());
        props.put("mail.smtp.port", Integer.toString(config.port()));
        props.put("mail.smtp.connectiontimeout", timeout);
        props.put("mail.smtp.timeout", timeout);
        props.put("mail.smtp.writetimeout", timeout);
        props.put("mail.smtp.auth", Boolean.toString(!config.username().isEmpty()));
        switch (config.security()) {
            case STARTTLS:
                props.put("mail.smtp.starttls.enable", "true");
                props.put("mail.smtp.starttls.required", "true");
                props.put("mail.smtp.ssl.checkserveridentity", "true");
                break;
            case SSL:
                props.put("mail.smtp.ssl.enable", "true");
                props.put("mail.smtp.ssl.checkserveridentity", "true");
                break;
            default:
                break;
        }
        return props;
    }

    @Override
    public void put(Collection<SinkRecord> records) {
        if (records.isEmpty()) {
            return;
        }
        try {
            for (SinkRecord record : records) {
                String id = recordId(record);
                if (!deliveredInPendingBatch.contains(id)) {
                    putOne(record);
                    deliveredInPendingBatch.add(id);
                }
            }
        } catch (RetriesExhausted e) {
            closeTransport();
            if (!redelivering) {
                redelivering = true;
                long wait = Math.max(1L, backoffMs(config.retries() + 1));
                context.timeout(wait);
                log.warn("Giving up on {} for now, Connect will redeliver the batch in {} ms: {}",
                        server, wait, e.getMessage());
                throw new RetriableException(e.getMessage(), e.getCause());
            }
            resetPending();
            throw new ConnectException("SMTP sink: " + e.getMessage() + " (also after redelivery)", e.getCause());
        } catch (RuntimeException e) {
            closeTransport();
            resetPending();
            throw e;
        }
        resetPending();
    }

    private void resetPending() {
        redelivering = false;
        deliveredInPendingBatch.clear();
    }

    private void putOne(SinkRecord record) throws RetriesExhausted {
        if (record.value() == null) {
            log.debug("Skipping null value at {}", recordId(record));
            return;
        }
        MimeMessage message;
        try {
            message = messageOf(record.value());
        } catch (IllegalArgumentException | MessagingException e) {
            permanentFailure(record, new ConnectException(
                    "the value at " + recordId(record) + " is not a mail: " + e.getMessage(), e));
            return;
        }
        for (int attempt = 0; ; attempt++) {
            String problem;
            try {
                send(message);
                log.trace("{} accepted the mail of {}", server, recordId(record));
                return;
            } catch (AuthenticationFailedException e) {
                throw new ConnectException(server + " refused the account (" + withoutAddresses(e.getMessage())
                        + "): check smtp.username and smtp.password");
            } catch (MessagingException e) {
                int code = replyCode(e);
                if (code >= 500) {
                    closeTransport(); // a refused transaction leaves the connection in doubt
                    permanentFailure(record, new ConnectException(server + " refused the mail of "
                            + recordId(record) + " for good: " + reply(e)));
                    return;
                }
                problem = reply(e);
                closeTransport();
            }
            if (attempt >= config.retries()) {
                log.error("{} failed after {} attempts: {}", server, attempt + 1, problem);
                throw new RetriesExhausted(server + " failed after " + (attempt + 1) + " attempts: " + problem);
            }
            long backoff = backoffMs(attempt);
            log.warn("{} attempt {}/{} failed ({}), retrying in {} ms",
                    server, attempt + 1, config.retries() + 1, problem, backoff);
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new ConnectException("interrupted while backing off from " + server, e);
            }
        }
    }

    private void send(MimeMessage message) throws MessagingException {
        if (transport == null || !transport.isConnected()) {
            closeTransport();
            transport = session.getTransport("smtp");
            if (config.username().isEmpty()) {
                transport.connect();
            } else {
                transport.connect(config.host(), config.port(), config.username(), config.password());
            }
        }
        transport.sendMessage(message, to);
    }

    /** The mail a record's value describes; IllegalArgumentException says what is missing. */
    private MimeMessage messageOf(Object value) throws MessagingException {
        if (!(value instanceof Map)) {
            throw new IllegalArgumentException("expected a JSON object {subject, text, headers} "
                    + "(JsonConverter with schemas.enable=false), got " + value.getClass().getSimpleName());
        }
        Map<?, ?> mail = (Map<?, ?>) value;
        String subject = text(mail, "subject");
        String text = text(mail, "text");
        Object headers = mail.get("headers");
        String messageId = null;
        MimeMessage message;
        if (headers instanceof Map && ((Map<?, ?>) headers).get("Message-ID") instanceof String) {
            messageId = (String) ((Map<?, ?>) headers).get("Message-ID");
        }
        final String fixedId = messageId;
        message = new MimeMessage(session) {
            @Override
            protected void updateMessageID() throws MessagingException {
                if (fixedId == null) {
                    super.updateMessageID();
                } else {
                    setHeader("Message-ID", fixedId); // the same record is the same mail
                }
            }
        };
        message.setFrom(from);
        message.setRecipients(Message.RecipientType.TO, to);
        message.setSubject(subject, "UTF-8");
        message.setText(text, "UTF-8");
        message.setSentDate(new Date());
        if (headers instanceof Map) {
            for (Map.Entry<?, ?> header : ((Map<?, ?>) headers).entrySet()) {
                String name = String.valueOf(header.getKey());
                if (!List.of("In-Reply-To", "References", "Message-ID").contains(name)) {
                    throw new IllegalArgumentException("header " + name + " is not one this sink sets "
                            + "(Message-ID, In-Reply-To, References)");
                }
                if (!name.equals("Message-ID")) {
                    message.setHeader(name, String.valueOf(header.getValue()));
                }
            }
        }
        message.saveChanges();
        return message;
    }

    private static String text(Map<?, ?> mail, String field) {
        Object value = mail.get(field);
        if (!(value instanceof String) || ((String) value).isEmpty()) {
            throw new IllegalArgumentException("field " + field + " must be a non-empty string");
        }
        return (String) value;
    }

    /** The SMTP reply code behind a failure (0 when there is none: a connection error). */
    static int replyCode(Throwable error) {
        for (Throwable t = error; t != null; t = next(t)) {
            if (t instanceof SMTPAddressFailedException) {
                return ((SMTPAddressFailedException) t).getReturnCode();
            }
            if (t instanceof SMTPSenderFailedException) {
                return ((SMTPSenderFailedException) t).getReturnCode();
            }
            if (t instanceof SMTPSendFailedException) {
                return ((SMTPSendFailedException) t).getReturnCode();
            }
        }
        return 0;
    }

    private static Throwable next(Throwable t) {
        Throwable next = t instanceof MessagingException ? ((MessagingException) t).getNextException() : null;
        if (next == null) {
            next = t.getCause();
        }
        return next == t ? null : next;
    }

    /** The server's reply (or the connection error) in one line, without the addresses. */
    static String reply(Throwable error) {
        for (Throwable t = error; t != null; t = next(t)) {
            if (t instanceof SMTPAddressFailedException || t instanceof SMTPSenderFailedException
                    || t instanceof SMTPSendFailedException) {
                return withoutAddresses(t.getClass().getSimpleName() + " " + t.getMessage().trim());
            }
        }
        Throwable root = error;
        while (next(root) != null) {
            root = next(root);
        }
        return withoutAddresses(root.getClass().getSimpleName() + ": " + root.getMessage());
    }

    /** A server echoes the refused address in its reply: people's addresses stay out of logs. */
    static String withoutAddresses(String text) {
        return ADDRESS.matcher(text).replaceAll("<address>");
    }

    /** backoff * 2^attempt, capped; computed without overflow. */
    private long backoffMs(int attempt) {
        long base = config.retryBackoffMs();
        if (base <= 0) {
            return 0;
        }
        long delay = base;
        for (int i = 0; i < attempt && delay < MAX_BACKOFF_MS; i++) {
            delay *= 2;
        }
        return Math.min(delay, MAX_BACKOFF_MS);
    }

    /** Routes a refused record to Connect's errant record reporter when there is one, else fails. */
    private void permanentFailure(SinkRecord record, ConnectException error) {
        if (reporter == null) {
            throw error;
        }
        try {
            // Throws if errors.tolerance=none; waits so the DLQ write precedes the offset commit.
            reporter.report(record, error).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ConnectException("interrupted while reporting " + recordId(record), e);
        } catch (ExecutionException e) {
            throw new ConnectException("could not report " + recordId(record) + " to the DLQ", e.getCause());
        }
        log.warn("Sent {} to the error reporter: {}", recordId(record), error.getMessage());
    }

    private void closeTransport() {
        if (transport != null) {
            try {
                transport.close();
            } catch (MessagingException e) {
                log.debug("closing the connection to {}: {}", server, e.getMessage());
            }
            transport = null;
        }
    }

    private static String recordId(SinkRecord r) {
        return r.topic() + "-" + r.kafkaPartition() + "@" + r.kafkaOffset();
    }

    @Override
    public void stop() {
        closeTransport();
        log.info("SMTP sink task stopped: {}", server);
    }

    /** Retries ran out on a transient failure. */
    private static final class RetriesExhausted extends Exception {
        private static final long serialVersionUID = 1L;

        RetriesExhausted(String message) {
            super(message);
        }
    }
}
