# Kafka Connect for the chart's KafkaConnect (connect.image): Strimzi's Kafka image with
# Foresight's HTTP and SMTP sink plugins on its plugin path, each in a folder of its own (the
# SMTP sink with the Jakarta Mail jars it needs). Build from the repository root:
#   docker build -f deploy/helm/connect.Dockerfile -t foresight-connect:0.1.0 .
FROM maven:3.9-eclipse-temurin-17 AS plugin
COPY connectors/kafka-connect/http-sink /build/http-sink
COPY connectors/kafka-connect/smtp-sink /build/smtp-sink
RUN mvn -q -B -f /build/http-sink/pom.xml package -DskipTests \
 && mvn -q -B -f /build/smtp-sink/pom.xml package -DskipTests

FROM quay.io/strimzi/kafka:0.47.0-kafka-3.9.1
COPY --from=plugin /build/http-sink/target/foresight-http-sink-*.jar /opt/kafka/plugins/foresight-http-sink/
COPY --from=plugin /build/smtp-sink/target/plugin/ /opt/kafka/plugins/foresight-smtp-sink/
