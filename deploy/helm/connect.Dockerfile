# Kafka Connect for the chart's KafkaConnect (connect.image): Strimzi's Kafka image with
# Foresight's HTTP sink plugin on its plugin path. Build from the repository root:
#   docker build -f deploy/helm/connect.Dockerfile -t foresight-connect:0.1.0 .
FROM maven:3.9-eclipse-temurin-17 AS plugin
COPY connectors/kafka-connect/http-sink /build
RUN mvn -q -B -f /build/pom.xml package -DskipTests

FROM quay.io/strimzi/kafka:0.47.0-kafka-3.9.1
COPY --from=plugin /build/target/foresight-http-sink-*.jar /opt/kafka/plugins/foresight-http-sink/
