package io.foresight.connect.http;

import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.util.Base64;
import java.util.Collection;
import java.util.Date;
import java.util.Map;

import org.apache.kafka.connect.data.Field;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.errors.DataException;

/**
 * A minimal JSON writer for the values Connect converters produce: Map, List, Struct, String,
 * Number, Boolean, byte[]/ByteBuffer, java.util.Date, and null.
 *
 * <p>Why not Jackson: Connect loads each plugin in its own isolated classloader, so a Jackson
 * dependency would have to be shaded into the jar (or would clash with the worker's copy), and
 * the plugin would drag a multi-megabyte library for the few dozen lines below. Output only,
 * no parsing, so the job is small.
 */
final class JsonWriter {

    private JsonWriter() {
    }

    static String write(Object value) {
        StringBuilder sb = new StringBuilder(128);
        write(sb, value);
        return sb.toString();
    }

    static void write(StringBuilder sb, Object value) {
        if (value == null) {
            sb.append("null");
        } else if (value instanceof CharSequence) {
            string(sb, value.toString());
        } else if (value instanceof Boolean) {
            sb.append(value);
        } else if (value instanceof Double || value instanceof Float) {
            double d = ((Number) value).doubleValue();
            // JSON has no NaN or Infinity.
            sb.append(Double.isFinite(d) ? value.toString() : "null");
        } else if (value instanceof BigDecimal) {
            sb.append(((BigDecimal) value).toPlainString());
        } else if (value instanceof Number) {
            sb.append(value);
        } else if (value instanceof Map) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                string(sb, String.valueOf(e.getKey()));
                sb.append(':');
                write(sb, e.getValue());
            }
            sb.append('}');
        } else if (value instanceof Collection) {
            sb.append('[');
            boolean first = true;
            for (Object item : (Collection<?>) value) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                write(sb, item);
            }
            sb.append(']');
        } else if (value instanceof Struct) {
            Struct struct = (Struct) value;
            sb.append('{');
            boolean first = true;
            for (Field field : struct.schema().fields()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                string(sb, field.name());
                sb.append(':');
                write(sb, struct.get(field));
            }
            sb.append('}');
        } else if (value instanceof byte[]) {
            // Same as JsonConverter: bytes inside a structure become base64 text.
            string(sb, Base64.getEncoder().encodeToString((byte[]) value));
        } else if (value instanceof ByteBuffer) {
            ByteBuffer buf = ((ByteBuffer) value).duplicate();
            byte[] bytes = new byte[buf.remaining()];
            buf.get(bytes);
            string(sb, Base64.getEncoder().encodeToString(bytes));
        } else if (value instanceof Date) {
            // Connect's Timestamp/Date/Time logical types: epoch milliseconds, as JsonConverter does.
            sb.append(((Date) value).getTime());
        } else {
            throw new DataException("cannot write " + value.getClass().getName() + " as JSON");
        }
    }

    private static void string(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                case '\b': sb.append("\\b"); break;
                case '\f': sb.append("\\f"); break;
                default:
                    // Control characters, and U+2028/U+2029 which break JavaScript consumers.
                    if (c < 0x20 || c == '\u2028' || c == '\u2029') {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        sb.append('"');
    }
}
