// Command subscriber prints every record of Foresight's Avro topics as one JSON line: topic,
// key, schema_id and value. Records are in Confluent's wire format (a zero byte, the writer
// schema's registry id as a big-endian uint32, the Avro body); the writer schema comes from the
// registry, once per id.
//
//	go run . -bootstrap 127.0.0.1:9092 -registry http://127.0.0.1:8085 predictions alerts
//
// It reads each topic from its start and stops after -max records, or when nothing came for
// -idle. JSON has no NaN or infinity: such values (a missing interval bound, a time that never
// comes) print as null. Timestamps (timestamp-millis) print as RFC 3339 times.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
)

type line struct {
	Topic    string `json:"topic"`
	Key      string `json:"key"`
	SchemaID uint32 `json:"schema_id"`
	Value    any    `json:"value"`
}

type registry struct {
	url     string
	schemas map[uint32]avro.Schema
}

// schema returns the writer schema registered under id, asking the registry the first time.
func (r *registry) schema(id uint32) (avro.Schema, error) {
	if s, ok := r.schemas[id]; ok {
		return s, nil
	}
	resp, err := http.Get(fmt.Sprintf("%s/schemas/ids/%d/schema", r.url, id))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("registry: schema %d: %s", id, body)
	}
	s, err := avro.Parse(string(body))
	if err != nil {
		return nil, err
	}
	r.schemas[id] = s
	return s, nil
}

// finite replaces NaN and infinities, which JSON cannot carry, by nil.
func finite(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	case float32:
		return finite(float64(x))
	case []any:
		for i := range x {
			x[i] = finite(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = finite(x[k])
		}
	}
	return v
}

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "Kafka brokers")
	url := flag.String("registry", "http://127.0.0.1:8085", "schema registry")
	max := flag.Int("max", math.MaxInt, "stop after this many records")
	idle := flag.Duration("idle", 5*time.Second, "stop when nothing came for this long")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: subscriber [flags] TOPIC...")
		os.Exit(2)
	}
	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(*bootstrap, ",")...),
		kgo.ConsumeTopics(flag.Args()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer client.Close()
	reg := &registry{url: strings.TrimRight(*url, "/"), schemas: map[uint32]avro.Schema{}}
	out := json.NewEncoder(os.Stdout)
	seen := 0
	for seen < *max {
		ctx, cancel := context.WithTimeout(context.Background(), *idle)
		fetches := client.PollFetches(ctx)
		cancel()
		if ctx.Err() != nil && fetches.NumRecords() == 0 {
			return // nothing came for -idle
		}
		for _, e := range fetches.Errors() {
			if e.Err != context.DeadlineExceeded {
				fmt.Fprintf(os.Stderr, "%s[%d]: %v\n", e.Topic, e.Partition, e.Err)
				os.Exit(1)
			}
		}
		for _, record := range fetches.Records() {
			if seen >= *max {
				break
			}
			v := record.Value
			if len(v) < 5 || v[0] != 0 {
				fmt.Fprintf(os.Stderr, "%s@%d: not Confluent-framed, skipped\n", record.Topic, record.Offset)
				continue
			}
			id := binary.BigEndian.Uint32(v[1:5])
			schema, err := reg.schema(id)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			var value any
			if err := avro.Unmarshal(schema, v[5:], &value); err != nil {
				fmt.Fprintf(os.Stderr, "%s@%d: %v\n", record.Topic, record.Offset, err)
				os.Exit(1)
			}
			if err := out.Encode(line{record.Topic, string(record.Key), id, finite(value)}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			seen++
		}
	}
}
