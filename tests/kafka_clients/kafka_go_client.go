// segmentio/kafka-go (Debian's golang-github-segmentio-kafka-go-dev) with
// its defaults: CreateTopics v0, a Writer (Produce v2, magic 1 message
// sets), and a Reader with a GroupID (FindCoordinator v0, JoinGroup v1,
// SyncGroup v0, Heartbeat v0, OffsetFetch v1, ListOffsets v1, Fetch v2
// answered with magic 1 message sets, synchronous OffsetCommit v2, and
// LeaveGroup v0). A second Reader of the same group must resume at the
// commits: it reads only what was written after the first one stopped.
//
// Usage: kafka_go_client BROKER_ADDR. Exits non-zero on any mismatch.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

func write(addr, topic string, from, to int) {
	w := kafka.NewWriter(kafka.WriterConfig{Brokers: []string{addr}, Topic: topic, Balancer: &kafka.Hash{}})
	var msgs []kafka.Message
	for i := from; i < to; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("key-%d", i%7)), Value: []byte(fmt.Sprintf("value-%d", i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check(w.WriteMessages(ctx, msgs...), "Writer.WriteMessages")
	check(w.Close(), "Writer.Close")
}

// read takes n messages through a group reader and returns their values.
func read(addr, topic, group string, n int) map[string]bool {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:  []string{addr},
		Topic:    topic,
		GroupID:  group,
		MinBytes: 1,
		MaxBytes: 1 << 20,
		MaxWait:  500 * time.Millisecond,
	})
	defer r.Close()
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(seen) < n {
		m, err := r.ReadMessage(ctx) // commits synchronously (CommitInterval 0)
		check(err, fmt.Sprintf("Reader.ReadMessage after %d of %d", len(seen), n))
		v := string(m.Value)
		if seen[v] {
			fail("duplicate delivery of %s", v)
		}
		seen[v] = true
	}
	return seen
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: kafka_go_client BROKER_ADDR")
	}
	addr := os.Args[1]
	topic := fmt.Sprintf("kafka-go-%d", time.Now().UnixNano())
	group := topic + "-group"

	conn, err := kafka.Dial("tcp", addr)
	check(err, "Dial")
	check(conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}), "CreateTopics v0")
	conn.Close()

	const first, more = 120, 20
	write(addr, topic, 0, first)
	fmt.Printf("wrote %d messages\n", first)
	seen := read(addr, topic, group, first)
	for i := 0; i < first; i++ {
		if !seen[fmt.Sprintf("value-%d", i)] {
			fail("value-%d not read", i)
		}
	}
	fmt.Printf("group reader read all %d and committed\n", first)

	write(addr, topic, first, first+more)
	seen = read(addr, topic, group, more)
	for i := first; i < first+more; i++ {
		if !seen[fmt.Sprintf("value-%d", i)] {
			fail("second reader did not get value-%d (got %v)", i, seen)
		}
	}
	fmt.Printf("a new group reader resumed at the commits: read exactly the %d new messages\n", more)
	fmt.Println("kafka-go OK")
}
