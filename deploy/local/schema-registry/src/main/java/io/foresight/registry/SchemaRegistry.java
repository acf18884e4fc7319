package io.foresight.registry;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executors;

/**
 * A schema registry speaking Confluent's REST API, for Avro schemas: the calls that Confluent's
 * serializers, Kafka Connect's AvroConverter, kcat (libserdes) and Foresight make.
 *
 * <pre>
 * java -cp CLASSPATH io.foresight.registry.SchemaRegistry --host 127.0.0.1 --port 8085 \
 *     --journal .stack/schema-registry/journal.jsonl
 * </pre>
 *
 * <p>Subjects, versions, global ids, per-subject compatibility levels (BACKWARD by default, as
 * Confluent's), lookups and compatibility checks, all judged by Apache Avro's parser and {@code
 * SchemaCompatibility}. Schema references and the Protobuf and JSON Schema types are not served.
 */
public final class SchemaRegistry {
  private static final String CONTENT_TYPE = "application/vnd.schemaregistry.v1+json";
  private static final ObjectMapper JSON = new ObjectMapper();

  private final Store store;

  private SchemaRegistry(Store store) {
    this.store = store;
  }

  public static void main(String[] args) throws IOException {
    String host = "127.0.0.1";
    int port = 8085;
    Path journal = null;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--host" -> host = args[i + 1];
        case "--port" -> port = Integer.parseInt(args[i + 1]);
        case "--journal" -> journal = Path.of(args[i + 1]);
        default -> throw new IllegalArgumentException(
            "unknown option " + args[i] + "; known: --host, --port, --journal");
      }
    }
    Store store = new Store(journal, JSON);
    SchemaRegistry registry = new SchemaRegistry(store);
    HttpServer server = HttpServer.create(new InetSocketAddress(host, port), 64);
    server.createContext("/", registry::handle);
    server.setExecutor(Executors.newFixedThreadPool(4));
    server.start();
    System.out.printf(
        "Foresight schema registry on http://%s:%d (%d schemas, journal %s)%n",
        host, port, store.schemaCount(), journal == null ? "none: in memory" : journal);
  }

  private void handle(HttpExchange exchange) throws IOException {
    int status = 200;
    Object reply;
    try (exchange) {
      try {
        reply = route(exchange.getRequestMethod(), segments(exchange), exchange);
      } catch (RegistryException e) {
        status = e.status;
        reply = JSON.createObjectNode().put("error_code", e.code).put("message", e.getMessage());
      } catch (IOException | RuntimeException e) {
        status = 500;
        reply = JSON.createObjectNode().put("error_code", 50001).put("message", e.toString());
      }
      byte[] body = JSON.writeValueAsBytes(reply);
      exchange.getResponseHeaders().set("Content-Type", CONTENT_TYPE);
      exchange.sendResponseHeaders(status, body.length);
      try (OutputStream out = exchange.getResponseBody()) {
        out.write(body);
      }
    }
  }

  private static List<String> segments(HttpExchange exchange) {
    List<String> out = new ArrayList<>();
    for (String part : exchange.getRequestURI().getRawPath().split("/")) {
      if (!part.isEmpty()) {
        out.add(URLDecoder.decode(part.replace("+", "%2B"), StandardCharsets.UTF_8));
      }
    }
    return out;
  }

  private Object route(String method, List<String> path, HttpExchange exchange)
      throws RegistryException, IOException {
    String first = path.isEmpty() ? "" : path.get(0);
    int n = path.size();
    switch (first) {
      case "" -> {
        return JSON.createObjectNode();
      }
      case "schemas" -> {
        if (n == 2 && path.get(1).equals("types")) {
          return List.of("AVRO");
        }
        if (n >= 3 && path.get(1).equals("ids") && method.equals("GET")) {
          return schemaById(id(path.get(2)), n == 4 ? path.get(3) : "");
        }
      }
      case "subjects" -> {
        if (n == 1 && method.equals("GET")) {
          return store.subjects();
        }
        if (n >= 2) {
          return subject(method, path.get(1), path.subList(2, n), exchange);
        }
      }
      case "config" -> {
        return config(method, n == 2 ? path.get(1) : null, exchange);
      }
      case "compatibility" -> {
        if (n >= 4 && path.get(1).equals("subjects") && path.get(3).equals("versions")) {
          String subject = path.get(2);
          List<String> problems =
              store.problems(subject, schemaText(exchange), n == 5 ? path.get(4) : null);
          ObjectNode out = JSON.createObjectNode().put("is_compatible", problems.isEmpty());
          if (query(exchange).contains("verbose=true")) {
            out.set("messages", JSON.valueToTree(problems));
          }
          return out;
        }
      }
      default -> {}
    }
    throw new RegistryException(404, 404, "HTTP 404 Not Found: " + method + " /" + String.join("/", path));
  }

  private Object schemaById(int id, String what) throws RegistryException {
    String text = store.schema(id);
    switch (what) {
      case "" -> {
        return JSON.createObjectNode().put("schema", text);
      }
      case "schema" -> {
        return raw(text);
      }
      case "versions" -> {
        ArrayNode out = JSON.createArrayNode();
        for (Store.Version v : store.usesOf(id)) {
          out.addObject().put("subject", v.subject()).put("version", v.version());
        }
        return out;
      }
      default -> throw new RegistryException(404, 404, "HTTP 404 Not Found");
    }
  }

  private Object subject(String method, String subject, List<String> rest, HttpExchange exchange)
      throws RegistryException, IOException {
    if (rest.isEmpty() && method.equals("POST")) {
      return described(store.lookup(subject, schemaText(exchange)));
    }
    if (rest.size() == 1 && rest.get(0).equals("versions")) {
      if (method.equals("POST")) {
        return JSON.createObjectNode().put("id", store.register(subject, schemaText(exchange)).id());
      }
      ArrayNode out = JSON.createArrayNode();
      for (int i = 1; i <= store.versions(subject).size(); i++) {
        out.add(i);
      }
      return out;
    }
    if (rest.size() >= 2 && rest.get(0).equals("versions") && method.equals("GET")) {
      Store.Version version = store.version(subject, rest.get(1));
      return rest.size() == 3 && rest.get(2).equals("schema")
          ? raw(version.schema())
          : described(version);
    }
    throw new RegistryException(405, 405, "HTTP 405 Method Not Allowed");
  }

  private Object config(String method, String subject, HttpExchange exchange)
      throws RegistryException, IOException {
    switch (method) {
      case "PUT" -> {
        JsonNode body = body(exchange);
        String level = body.hasNonNull("compatibility") ? body.get("compatibility").asText() : null;
        store.setLevel(subject, level);
        return JSON.createObjectNode().put("compatibility", level);
      }
      case "DELETE" -> {
        String was = store.level(subject);
        store.clearLevel(subject);
        return JSON.createObjectNode().put("compatibilityLevel", was);
      }
      default -> {
        String level = subject == null ? store.level(null) : store.ownLevel(subject);
        if (level == null) {
          if (!query(exchange).contains("defaultToGlobal=true")) {
            throw new RegistryException(
                404, 40408, "Subject '" + subject + "' does not have subject-level compatibility"
                    + " configured");
          }
          level = store.level(null);
        }
        return JSON.createObjectNode().put("compatibilityLevel", level);
      }
    }
  }

  private static ObjectNode described(Store.Version v) {
    return JSON.createObjectNode()
        .put("subject", v.subject())
        .put("version", v.version())
        .put("id", v.id())
        .put("schema", v.schema());
  }

  private static JsonNode raw(String text) throws RegistryException {
    try {
      return JSON.readTree(text);
    } catch (IOException e) {
      throw new RegistryException(500, 50001, "stored schema is not JSON: " + e.getMessage());
    }
  }

  private static int id(String text) throws RegistryException {
    try {
      return Integer.parseInt(text);
    } catch (NumberFormatException e) {
      throw new RegistryException(404, 40403, "Schema " + text + " not found");
    }
  }

  private static String query(HttpExchange exchange) {
    String query = exchange.getRequestURI().getRawQuery();
    return query == null ? "" : query;
  }

  private static JsonNode body(HttpExchange exchange) throws RegistryException, IOException {
    try (InputStream in = exchange.getRequestBody()) {
      byte[] bytes = in.readAllBytes();
      JsonNode node = bytes.length == 0 ? JSON.createObjectNode() : JSON.readTree(bytes);
      if (!node.isObject()) {
        throw new RegistryException(422, 42201, "the request body must be a JSON object");
      }
      return node;
    } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new RegistryException(400, 400, "the request body is not JSON: " + e.getOriginalMessage());
    }
  }

  /** The {@code schema} of a request body, refusing what this registry does not serve. */
  private static String schemaText(HttpExchange exchange) throws RegistryException, IOException {
    JsonNode body = body(exchange);
    String type = body.hasNonNull("schemaType") ? body.get("schemaType").asText() : "AVRO";
    if (!type.equals("AVRO")) {
      throw new RegistryException(
          422, 42201, "schemaType " + type + " is not served here: only AVRO schemas are");
    }
    if (body.has("references") && body.get("references").size() > 0) {
      throw new RegistryException(422, 42201, "schema references are not served here");
    }
    return body.hasNonNull("schema") ? body.get("schema").asText() : null;
  }
}
