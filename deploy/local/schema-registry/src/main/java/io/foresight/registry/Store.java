package io.foresight.registry;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;
import org.apache.avro.SchemaCompatibility.Incompatibility;

/**
 * The registry's state and rules: schemas by id, each subject's versions, compatibility levels.
 *
 * <p>A schema is kept in Avro's own text of it ({@code Schema.toString()}, as Confluent's registry
 * keeps it), so the same schema gets the same id in every subject. Every change is appended to a
 * journal (one JSON object a line) and replayed at start, so ids outlive a restart: a record in
 * Kafka names its writer schema by id, and an id must never come to mean another schema.
 */
final class Store {
  static final List<String> LEVELS =
      List.of(
          "NONE",
          "BACKWARD",
          "BACKWARD_TRANSITIVE",
          "FORWARD",
          "FORWARD_TRANSITIVE",
          "FULL",
          "FULL_TRANSITIVE");

  /** One version of one subject. */
  record Version(String subject, int id, int version, String schema) {}

  private final List<String> schemas = new ArrayList<>(); // id - 1 -> schema text
  private final Map<String, Integer> ids = new HashMap<>(); // schema text -> id
  private final Map<String, List<Integer>> subjects = new TreeMap<>(); // subject -> ids
  private final Map<String, String> levels = new HashMap<>(); // subject -> its level
  private String globalLevel = "BACKWARD";
  private final ObjectMapper json;
  private final BufferedWriter journal; // null: in memory only

  Store(Path journalPath, ObjectMapper json) throws IOException {
    this.json = json;
    if (journalPath == null) {
      journal = null;
      return;
    }
    if (Files.isRegularFile(journalPath)) {
      for (String line : Files.readAllLines(journalPath, StandardCharsets.UTF_8)) {
        if (!line.isBlank()) {
          apply(json.readTree(line));
        }
      }
    }
    journal =
        Files.newBufferedWriter(
            journalPath,
            StandardCharsets.UTF_8,
            StandardOpenOption.CREATE,
            StandardOpenOption.APPEND);
  }

  int schemaCount() {
    return schemas.size();
  }

  // -- schemas and subjects ---------------------------------------------------------------

  /** Registers {@code text} under {@code subject} if the subject's level allows it. */
  synchronized Version register(String subject, String text) throws RegistryException {
    String canonical = parse(text).toString();
    List<Integer> versions = subjects.getOrDefault(subject, List.of());
    for (int i = 0; i < versions.size(); i++) {
      if (schemas.get(versions.get(i) - 1).equals(canonical)) {
        return new Version(subject, versions.get(i), i + 1, canonical);
      }
    }
    List<String> problems = problems(subject, canonical, null);
    if (!problems.isEmpty()) {
      throw new RegistryException(
          409,
          409,
          "Schema being registered is incompatible with an earlier schema for subject \""
              + subject
              + "\" (compatibility "
              + level(subject)
              + "), details: "
              + problems);
    }
    ObjectNode change = json.createObjectNode().put("register", subject).put("schema", canonical);
    record(change);
    return version(subject, String.valueOf(subjects.get(subject).size()));
  }

  /** The version of {@code subject} that holds {@code text}. */
  synchronized Version lookup(String subject, String text) throws RegistryException {
    String canonical = parse(text).toString();
    List<Integer> versions = versions(subject);
    for (int i = 0; i < versions.size(); i++) {
      if (schemas.get(versions.get(i) - 1).equals(canonical)) {
        return new Version(subject, versions.get(i), i + 1, canonical);
      }
    }
    throw new RegistryException(404, 40403, "Schema not found under subject " + subject);
  }

  synchronized List<String> subjects() {
    return new ArrayList<>(subjects.keySet());
  }

  /** The ids of {@code subject}'s versions, oldest first. */
  synchronized List<Integer> versions(String subject) throws RegistryException {
    List<Integer> versions = subjects.get(subject);
    if (versions == null) {
      throw new RegistryException(404, 40401, "Subject '" + subject + "' not found.");
    }
    return List.copyOf(versions);
  }

  /** Version {@code which} ("latest", or a number from 1) of {@code subject}. */
  synchronized Version version(String subject, String which) throws RegistryException {
    List<Integer> versions = versions(subject);
    int number;
    if (which.equals("latest") || which.equals("-1")) {
      number = versions.size();
    } else {
      try {
        number = Integer.parseInt(which);
      } catch (NumberFormatException e) {
        throw new RegistryException(
            422,
            42202,
            "The specified version '" + which + "' is not a valid version id. Allowed values are"
                + " between [1, 2^31-1] and the string \"latest\"");
      }
    }
    if (number < 1 || number > versions.size()) {
      throw new RegistryException(
          404, 40402, "Version " + which + " not found for subject " + subject);
    }
    int id = versions.get(number - 1);
    return new Version(subject, id, number, schemas.get(id - 1));
  }

  synchronized String schema(int id) throws RegistryException {
    if (id < 1 || id > schemas.size()) {
      throw new RegistryException(404, 40403, "Schema " + id + " not found");
    }
    return schemas.get(id - 1);
  }

  /** Every subject and version that holds schema {@code id}. */
  synchronized List<Version> usesOf(int id) throws RegistryException {
    String text = schema(id);
    List<Version> out = new ArrayList<>();
    for (Map.Entry<String, List<Integer>> entry : subjects.entrySet()) {
      List<Integer> versions = entry.getValue();
      for (int i = 0; i < versions.size(); i++) {
        if (versions.get(i) == id) {
          out.add(new Version(entry.getKey(), id, i + 1, text));
        }
      }
    }
    return out;
  }

  // -- compatibility ----------------------------------------------------------------------

  /**
   * Why {@code text} may not follow {@code subject}'s versions under its level (empty: it may).
   * With {@code against} set, only that version is compared, whatever the level's reach.
   */
  synchronized List<String> problems(String subject, String text, String against)
      throws RegistryException {
    Schema candidate = parse(text);
    String level = level(subject);
    List<Integer> earlier = subjects.getOrDefault(subject, List.of());
    if (against != null) {
      earlier = List.of(version(subject, against).id());
    } else if (!level.endsWith("_TRANSITIVE") && !earlier.isEmpty()) {
      earlier = List.of(earlier.get(earlier.size() - 1));
    }
    List<String> out = new ArrayList<>();
    if (level.equals("NONE")) {
      return out;
    }
    for (int id : earlier) {
      Schema old = new Schema.Parser().parse(schemas.get(id - 1));
      if (!level.startsWith("FORWARD")) {
        out.addAll(incompatibilities(candidate, old, "the new schema cannot read data written by"
            + " schema " + id));
      }
      if (!level.startsWith("BACKWARD")) {
        out.addAll(incompatibilities(old, candidate, "schema " + id + " cannot read data"
            + " written by the new schema"));
      }
    }
    return out;
  }

  private static List<String> incompatibilities(Schema reader, Schema writer, String what) {
    List<String> out = new ArrayList<>();
    for (Incompatibility problem :
        SchemaCompatibility.checkReaderWriterCompatibility(reader, writer)
            .getResult()
            .getIncompatibilities()) {
      out.add(
          what
              + ": "
              + problem.getType()
              + " at "
              + problem.getLocation()
              + " ("
              + problem.getMessage()
              + ")");
    }
    return out;
  }

  synchronized String level(String subject) {
    return subject == null ? globalLevel : levels.getOrDefault(subject, globalLevel);
  }

  /** The subject's own level, or null when it follows the global one. */
  synchronized String ownLevel(String subject) {
    return levels.get(subject);
  }

  synchronized void setLevel(String subject, String level) throws RegistryException {
    if (level == null || !LEVELS.contains(level)) {
      throw new RegistryException(
          422, 42203, "Invalid compatibility level " + level + "; valid: " + LEVELS);
    }
    ObjectNode change = json.createObjectNode().put("level", level);
    change.put("config", subject);
    record(change);
  }

  synchronized void clearLevel(String subject) throws RegistryException {
    record(json.createObjectNode().put("unconfig", subject));
  }

  // -- the journal ------------------------------------------------------------------------

  private void record(ObjectNode change) throws RegistryException {
    if (journal != null) {
      try {
        journal.write(json.writeValueAsString(change));
        journal.newLine();
        journal.flush();
      } catch (IOException e) {
        throw new RegistryException(500, 50001, "cannot write the journal: " + e.getMessage());
      }
    }
    apply(change);
  }

  private void apply(JsonNode change) {
    if (change.has("register")) {
      String text = change.get("schema").asText();
      Integer id = ids.get(text);
      if (id == null) {
        schemas.add(text);
        id = schemas.size();
        ids.put(text, id);
      }
      subjects.computeIfAbsent(change.get("register").asText(), s -> new ArrayList<>()).add(id);
    } else if (change.has("level")) {
      JsonNode subject = change.get("config");
      if (subject == null || subject.isNull()) {
        globalLevel = change.get("level").asText();
      } else {
        levels.put(subject.asText(), change.get("level").asText());
      }
    } else if (change.has("unconfig")) {
      levels.remove(change.get("unconfig").asText());
    }
  }

  private static Schema parse(String text) throws RegistryException {
    if (text == null) {
      throw new RegistryException(422, 42201, "Invalid schema: the body has no \"schema\" field");
    }
    try {
      return new Schema.Parser().parse(text);
    } catch (RuntimeException e) {
      throw new RegistryException(422, 42201, "Invalid schema " + text + ": " + e.getMessage());
    }
  }
}
