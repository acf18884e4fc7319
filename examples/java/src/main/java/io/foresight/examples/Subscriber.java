package io.foresight.examples;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Prints every record of Foresight's Avro topics as one JSON line: {@code topic}, {@code key},
 * {@code schema_id}, {@code value}. Records are in Confluent's wire format (a zero byte, the
 * writer schema's registry id as a big-endian int, the Avro body); the writer schema comes from
 * the registry, once per id.
 *
 * <pre>
 * Subscriber --bootstrap HOST:PORT --registry URL [--reader-schema FILE.avsc]
 *            [--max N] [--idle-ms MS] TOPIC...
 * </pre>
 *
 * Reads each topic from its start and stops after {@code --max} records, or when nothing came
 * for {@code --idle-ms} (5000). With {@code --reader-schema}, records of that schema's name are
 * read into it (Avro schema resolution): a consumer built against an older version keeps
 * working while producers move on.
 */
public final class Subscriber {
  private static final HttpClient HTTP = HttpClient.newHttpClient();

  private final String registry;
  private final Map<String, Schema> readers = new HashMap<>();
  private final Map<Integer, GenericDatumReader<Object>> byId = new HashMap<>();

  private Subscriber(String registry) {
    this.registry = registry.replaceAll("/$", "");
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = "127.0.0.1:9092";
    String registryUrl = "http://127.0.0.1:8085";
    long max = Long.MAX_VALUE;
    long idleMs = 5000;
    List<String> topics = new ArrayList<>();
    List<Path> readerFiles = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--bootstrap" -> bootstrap = args[++i];
        case "--registry" -> registryUrl = args[++i];
        case "--reader-schema" -> readerFiles.add(Path.of(args[++i]));
        case "--max" -> max = Long.parseLong(args[++i]);
        case "--idle-ms" -> idleMs = Long.parseLong(args[++i]);
        default -> topics.add(args[i]);
      }
    }
    Subscriber subscriber = new Subscriber(registryUrl);
    for (Path file : readerFiles) {
      Schema reader = new Schema.Parser().parse(Files.readString(file));
      subscriber.readers.put(reader.getFullName(), reader);
    }
    subscriber.run(bootstrap, topics, max, idleMs);
  }

  private void run(String bootstrap, List<String> topics, long max, long idleMs)
      throws IOException, InterruptedException {
    Properties config = new Properties();
    config.put("bootstrap.servers", bootstrap);
    config.put("key.deserializer", ByteArrayDeserializer.class.getName());
    config.put("value.deserializer", ByteArrayDeserializer.class.getName());
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(config)) {
      List<TopicPartition> partitions = new ArrayList<>();
      for (String topic : topics) {
        for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
          partitions.add(new TopicPartition(topic, p.partition()));
        }
      }
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      long seen = 0;
      long quietSince = System.currentTimeMillis();
      while (seen < max && System.currentTimeMillis() - quietSince < idleMs) {
        for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(200))) {
          quietSince = System.currentTimeMillis();
          print(record);
          if (++seen >= max) {
            break;
          }
        }
      }
    }
  }

  private void print(ConsumerRecord<byte[], byte[]> record)
      throws IOException, InterruptedException {
    ByteBuffer value = ByteBuffer.wrap(record.value());
    if (value.remaining() < 5 || value.get() != 0) {
      System.err.printf("%s@%d: not Confluent-framed, skipped%n", record.topic(), record.offset());
      return;
    }
    int id = value.getInt();
    Object decoded =
        reader(id)
            .read(
                null,
                DecoderFactory.get()
                    .binaryDecoder(value.array(), value.position(), value.remaining(), null));
    String key = record.key() == null ? "null" : quote(new String(record.key(), "UTF-8"));
    // GenericData's toString is JSON; NaN and infinities, which JSON has not, come as the
    // strings "NaN", "Infinity" and "-Infinity", bytes as {"bytes": "..."}.
    System.out.printf(
        "{\"topic\":%s,\"key\":%s,\"schema_id\":%d,\"value\":%s}%n",
        quote(record.topic()), key, id, decoded);
  }

  /** A reader from the writer schema registered under {@code id} to the chosen reader schema. */
  private GenericDatumReader<Object> reader(int id) throws IOException, InterruptedException {
    GenericDatumReader<Object> reader = byId.get(id);
    if (reader == null) {
      HttpRequest request =
          HttpRequest.newBuilder(URI.create(registry + "/schemas/ids/" + id + "/schema")).build();
      HttpResponse<String> response = HTTP.send(request, HttpResponse.BodyHandlers.ofString());
      if (response.statusCode() != 200) {
        throw new IOException("registry: schema " + id + ": " + response.body());
      }
      Schema writer = new Schema.Parser().parse(response.body());
      reader = new GenericDatumReader<>(writer, readers.getOrDefault(writer.getFullName(), writer));
      byId.put(id, reader);
    }
    return reader;
  }

  private static String quote(String text) {
    return "\"" + text.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
  }
}
