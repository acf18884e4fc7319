package io.foresight.connect.http;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.sink.ErrantRecordReporter;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Sends each record value (or each put() batch, as a JSON array) to the configured URL.
 *
 * <p>Delivery is at-least-once: put() returns only after every request in it succeeded (or its
 * record was handed to the dead letter queue), so the offsets Connect commits afterwards are safe.
 *
 * <p>Failure policy, per request:
 * <ul>
 *   <li>2xx: done.</li>
 *   <li>Connection error, timeout, 5xx or 429: retried up to {@code http.retries} times, waiting
 *       {@code http.retry.backoff.ms * 2^n} (capped at {@link #MAX_BACKOFF_MS}; a Retry-After
 *       header in seconds on 429/503 is honoured up to the same cap). When the retries run out,
 *       put() throws {@link RetriableException} once: Connect pauses, waits, and hands the same
 *       batch back, and records already delivered from it are not sent twice. If that redelivery
 *       also runs out of retries, put() throws {@link ConnectException} and the task fails, so an
 *       endpoint that is down for good shows as a FAILED task instead of a silent loop.</li>
 *   <li>Anything else (4xx other than 429, 1xx, 3xx: redirects are not followed) and values that
 *       cannot be serialised: permanent. The error carries the status and the first 500 chars of
 *       the response body. Note that Connect applies {@code errors.tolerance} and the dead letter
 *       queue only to converter and transform failures, never to an exception thrown from put();
 *       so when the connector has a DLQ topic or error logging configured, the record goes to
 *       Connect's {@link ErrantRecordReporter} (which honours {@code errors.tolerance}: with
 *       {@code all} it is written to the DLQ and the task moves on, with {@code none} the task
 *       fails). Without a reporter, put() throws the ConnectException and the task fails.</li>
 * </ul>
 *
 * <p>Logs and error messages name the endpoint by {@link HttpSinkConfig#loggableUrl()}, never by
 * its full URL, and never quote a header or the inserted body value: they may carry secrets.
 */
public class HttpSinkTask extends SinkTask {

    private static final Logger log = LoggerFactory.getLogger(HttpSinkTask.class);

    /** Upper bound of one backoff sleep, so a retry loop stays well inside max.poll.interval.ms. */
    static final long MAX_BACKOFF_MS = 30_000L;
    private static final int BODY_SNIPPET_CHARS = 500;

    private HttpSinkConfig config;
    private HttpClient client;
    private URI url;
    private String method;
    /** "POST https://host:port/...": the request line as logs and errors show it. */
    private String target;
    private Duration timeout;
    private boolean addJsonContentType;
    private ErrantRecordReporter reporter;

    /** True after put() threw RetriableException, until a put() completes. */
    private boolean redelivering;
    /** Records of the pending (redelivered) batch already accepted by the endpoint. */
    private final Set<String> deliveredInPendingBatch = new HashSet<>();

    @Override
    public String version() {
        return HttpSinkConfig.version();
    }

    @Override
    public void start(Map<String, String> props) {
        config = new HttpSinkConfig(props);
        url = config.url();
        method = config.method();
        target = method + " " + config.loggableUrl();
        timeout = Duration.ofMillis(config.timeoutMs());
        addJsonContentType = config.headers().keySet().stream()
                .noneMatch(h -> h.equalsIgnoreCase("Content-Type"));
        client = HttpClient.newBuilder()
                .connectTimeout(timeout)
                .followRedirects(HttpClient.Redirect.NEVER)
                .build();
        try {
            reporter = context.errantRecordReporter(); // null unless a DLQ or error log is configured
        } catch (NoSuchMethodError | NoClassDefFoundError e) {
            reporter = null; // worker older than Kafka 2.6
        }
        redelivering = false;
        deliveredInPendingBatch.clear();
        log.info("HTTP sink task started: {} (batch as JSON array: {}, retries: {}, DLQ reporter: {}, "
                + "inserted body field: {})", target, config.batchJsonArray(), config.retries(), reporter != null,
                config.insertField().isEmpty() ? "none" : config.insertField());
    }

    @Override
    public void put(Collection<SinkRecord> records) {
        if (records.isEmpty()) {
            return;
        }
        try {
            if (config.batchJsonArray()) {
                putBatch(records);
            } else {
                for (SinkRecord record : records) {
                    String id = recordId(record);
                    if (!deliveredInPendingBatch.contains(id)) {
                        putOne(record);
                        deliveredInPendingBatch.add(id);
                    }
                }
            }
        } catch (RetriesExhausted e) {
            if (!redelivering) {
                redelivering = true;
                // Wait as long as the next step of the backoff sequence would have.
                long wait = Math.max(1L, backoffMs(config.retries() + 1));
                context.timeout(wait);
                log.warn("Giving up on {} for now, Connect will redeliver the batch in {} ms: {}",
                        target, wait, e.getMessage());
                throw new RetriableException(e.getMessage(), e.getCause());
            }
            resetPending();
            throw new ConnectException("HTTP sink: " + e.getMessage() + " (also after redelivery)", e.getCause());
        } catch (RuntimeException e) {
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
        Object value = record.value();
        if (value == null) {
            log.debug("Skipping null value at {}", recordId(record));
            return;
        }
        byte[] body;
        try {
            body = bodyOf(withInsertedField(value));
        } catch (RuntimeException e) {
            permanentFailure(List.of(record), new ConnectException(
                    "cannot serialise the value at " + recordId(record) + ": " + e.getMessage(), e));
            return;
        }
        try {
            send(body, 1);
        } catch (PermanentFailure e) {
            permanentFailure(List.of(record), e.toConnectException());
        }
    }

    private void putBatch(Collection<SinkRecord> records) throws RetriesExhausted {
        StringBuilder sb = new StringBuilder(256 * records.size()).append('[');
        List<SinkRecord> included = new ArrayList<>(records.size());
        for (SinkRecord record : records) {
            Object value = record.value();
            String element;
            try {
                element = value == null ? null : jsonElementOf(withInsertedField(value));
            } catch (RuntimeException e) {
                permanentFailure(List.of(record), new ConnectException(
                        "cannot serialise the value at " + recordId(record) + ": " + e.getMessage(), e));
                continue;
            }
            if (element == null || element.isBlank()) {
                log.debug("Skipping empty value at {}", recordId(record));
                continue;
            }
            if (!included.isEmpty()) {
                sb.append(',');
            }
            sb.append(element);
            included.add(record);
        }
        if (included.isEmpty()) {
            return;
        }
        sb.append(']');
        try {
            send(sb.toString().getBytes(StandardCharsets.UTF_8), included.size());
        } catch (PermanentFailure e) {
            // The endpoint rejected the array as a whole: we cannot tell which record was at fault.
            permanentFailure(included, e.toConnectException());
        }
    }

    /** Sends one request, retrying transient failures (see the class comment). */
    private void send(byte[] body, int recordCount) throws RetriesExhausted, PermanentFailure {
        HttpRequest.Builder builder = HttpRequest.newBuilder(url)
                .timeout(timeout)
                .method(method, HttpRequest.BodyPublishers.ofByteArray(body));
        if (addJsonContentType) {
            builder.header("Content-Type", "application/json");
        }
        config.headers().forEach(builder::header);
        HttpRequest request = builder.build();

        int retries = config.retries();
        for (int attempt = 0; ; attempt++) {
            String problem;
            long retryAfterMs = -1;
            try {
                HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
                int status = response.statusCode();
                if (status >= 200 && status < 300) {
                    log.trace("{} -> {} ({} records)", target, status, recordCount);
                    return;
                }
                String snippet = snippet(response.body());
                if (status != 429 && status < 500) {
                    log.error("{} failed permanently with HTTP {} ({} records): {}",
                            target, status, recordCount, snippet);
                    throw new PermanentFailure(status, snippet);
                }
                problem = "HTTP " + status + ": " + snippet;
                if (status == 429 || status == 503) {
                    retryAfterMs = retryAfterMs(response);
                }
            } catch (IOException e) {
                // Connection refused/reset, DNS failure, HttpTimeoutException (a subclass), ...
                problem = describe(e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new ConnectException("interrupted while sending to " + target, e);
            }
            if (attempt >= retries) {
                log.error("{} failed after {} attempts ({} records): {}",
                        target, attempt + 1, recordCount, problem);
                throw new RetriesExhausted(target + " failed after " + (attempt + 1) + " attempts: " + problem);
            }
            long backoff = backoffMs(attempt);
            if (retryAfterMs >= 0) {
                backoff = Math.min(MAX_BACKOFF_MS, Math.max(backoff, retryAfterMs));
            }
            log.warn("{} attempt {}/{} failed ({}), retrying in {} ms",
                    target, attempt + 1, retries + 1, problem, backoff);
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new ConnectException("interrupted while backing off from " + target, e);
            }
        }
    }

    /** "ConnectException: Connection refused": HttpClient's own exceptions often have no message. */
    private static String describe(Throwable e) {
        StringBuilder sb = new StringBuilder(e.getClass().getSimpleName());
        for (Throwable t = e; t != null; t = t.getCause() == t ? null : t.getCause()) {
            if (t.getMessage() != null) {
                return sb.append(": ").append(t.getMessage()).toString();
            }
        }
        if (e instanceof java.net.ConnectException) {
            sb.append(": could not connect (refused or unreachable)"); // the JDK gives no message here
        }
        return sb.toString();
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

    private static long retryAfterMs(HttpResponse<?> response) {
        Optional<String> header = response.headers().firstValue("Retry-After");
        if (header.isEmpty()) {
            return -1;
        }
        try {
            return Math.max(0, Long.parseLong(header.get().trim())) * 1000L;
        } catch (NumberFormatException e) {
            return -1; // an HTTP date: fall back to our own backoff
        }
    }

    /** Routes rejected records to Connect's errant record reporter when there is one, else fails. */
    private void permanentFailure(List<SinkRecord> records, ConnectException error) {
        if (reporter == null) {
            throw error;
        }
        for (SinkRecord record : records) {
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
    }

    /** The value with the configured body field set first (replacing the record's own); as is without one. */
    private Object withInsertedField(Object value) {
        String field = config.insertField();
        if (field.isEmpty()) {
            return value;
        }
        if (!(value instanceof Map)) {
            throw new DataException(HttpSinkConfig.INSERT_FIELD + " needs JSON object values "
                    + "(JsonConverter with schemas.enable=false), not " + value.getClass().getSimpleName());
        }
        Map<Object, Object> body = new LinkedHashMap<>();
        body.put(field, config.insertValue());
        ((Map<?, ?>) value).forEach((k, v) -> {
            if (!field.equals(k)) {
                body.put(k, v);
            }
        });
        return body;
    }

    /** The request body for one record: text as UTF-8, bytes as they are, anything else as JSON. */
    static byte[] bodyOf(Object value) {
        if (value instanceof String) {
            return ((String) value).getBytes(StandardCharsets.UTF_8);
        }
        if (value instanceof byte[]) {
            return (byte[]) value;
        }
        if (value instanceof ByteBuffer) {
            ByteBuffer buf = ((ByteBuffer) value).duplicate();
            byte[] bytes = new byte[buf.remaining()];
            buf.get(bytes);
            return bytes;
        }
        return JsonWriter.write(value).getBytes(StandardCharsets.UTF_8);
    }

    /** One element of a JSON array body: text and bytes are taken to be JSON already. */
    static String jsonElementOf(Object value) {
        if (value instanceof String || value instanceof byte[] || value instanceof ByteBuffer) {
            return new String(bodyOf(value), StandardCharsets.UTF_8).trim();
        }
        return JsonWriter.write(value);
    }

    private static String recordId(SinkRecord r) {
        return r.topic() + "-" + r.kafkaPartition() + "@" + r.kafkaOffset();
    }

    private static String snippet(String body) {
        if (body == null) {
            return "";
        }
        return body.length() <= BODY_SNIPPET_CHARS ? body : body.substring(0, BODY_SNIPPET_CHARS);
    }

    @Override
    public void stop() {
        // HttpClient has no close() before Java 21; its threads end when it is unreachable.
        client = null;
        log.info("HTTP sink task stopped: {}", target);
    }

    /** Retries ran out on a transient failure. */
    private static final class RetriesExhausted extends Exception {
        private static final long serialVersionUID = 1L;

        RetriesExhausted(String message) {
            super(message);
        }
    }

    /** The endpoint answered with a status that retrying will not change. */
    private final class PermanentFailure extends Exception {
        private static final long serialVersionUID = 1L;
        final int status;
        final String body;

        PermanentFailure(int status, String body) {
            super("HTTP " + status);
            this.status = status;
            this.body = body;
        }

        ConnectException toConnectException() {
            return new ConnectException(String.format(Locale.ROOT, "%s returned HTTP %d: %s", target, status, body));
        }
    }
}
