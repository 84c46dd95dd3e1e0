// Sarama (Debian's golang-github-shopify-sarama-dev) with its DEFAULT
// config.Version (sarama.MinVersion, Kafka 0.8.2): Produce v0 with magic 0
// message sets (plain, gzip and snappy wrappers), Fetch v0, Metadata v0,
// ListOffsets v0, OffsetCommit v1 and OffsetFetch v1 through the offset
// manager (Sarama's consumer groups need 0.10.2+, so the default config
// commits as a group without members), and the admin's ListTopics and
// DescribeConfig (DescribeConfigs v0; Sarama's admin needs Version 0.11.0,
// which that part alone sets).
//
// Usage: sarama_client BROKER_ADDR. Exits non-zero with a message on any
// mismatch.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/Shopify/sarama"
)

func main() {
	if len(os.Args) != 2 {
		fail("usage: sarama_client BROKER_ADDR")
	}
	addrs := []string{os.Args[1]}
	topic := fmt.Sprintf("sarama-default-%d", time.Now().UnixNano())
	group := topic + "-group"

	conf := sarama.NewConfig()
	if conf.Version != sarama.MinVersion {
		fail("expected the default version %v, have %v", sarama.MinVersion, conf.Version)
	}
	conf.ClientID = "sarama-default"
	conf.Producer.Return.Successes = true // required by the SyncProducer
	conf.Producer.RequiredAcks = sarama.WaitForAll
	conf.Consumer.Return.Errors = true
	conf.Metadata.Retry.Backoff = 200 * time.Millisecond

	client, err := sarama.NewClient(addrs, conf)
	check(err, "client")
	defer client.Close()

	// Produce: 3 codecs x 40 messages, keyed; the topic is auto-created.
	const perCodec = 40
	want := map[string]string{}
	for _, codec := range []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionSnappy} {
		pc := *conf
		pc.Producer.Compression = codec
		pcl, err := sarama.NewClient(addrs, &pc)
		check(err, "producer client")
		p, err := sarama.NewSyncProducerFromClient(pcl)
		check(err, "producer")
		var msgs []*sarama.ProducerMessage
		for i := 0; i < perCodec; i++ {
			k := fmt.Sprintf("%v-key-%d", codec, i)
			v := fmt.Sprintf("%v-value-%d", codec, i)
			want[k] = v
			msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(k), Value: sarama.StringEncoder(v)})
		}
		check(p.SendMessages(msgs), fmt.Sprintf("produce (%v)", codec))
		p.Close()
		pcl.Close()
	}
	fmt.Printf("produced %d messages (none, gzip, snappy)\n", len(want))

	// Consume every partition from the oldest offset.
	check(client.RefreshMetadata(topic), "metadata")
	parts, err := client.Partitions(topic)
	check(err, "partitions")
	consumer, err := sarama.NewConsumerFromClient(client)
	check(err, "consumer")
	got := map[string]string{}
	for _, p := range parts {
		hw, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		check(err, "ListOffsets v0 (newest)")
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		check(err, "ListOffsets v0 (oldest)")
		if hw == oldest {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		check(err, "consume partition")
		deadline := time.After(20 * time.Second)
		for next := oldest; next < hw; {
			select {
			case m := <-pc.Messages():
				if m.Offset != next {
					fail("partition %d: offset %d, expected %d", p, m.Offset, next)
				}
				next = m.Offset + 1
				got[string(m.Key)] = string(m.Value)
			case e := <-pc.Errors():
				fail("consume: %v", e)
			case <-deadline:
				fail("partition %d: stuck at %d of %d", p, next, hw)
			}
		}
		pc.Close()
	}
	if len(got) != len(want) {
		fail("consumed %d distinct messages, produced %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			fail("key %s: consumed %q, produced %q", k, got[k], v)
		}
	}
	fmt.Printf("consumed %d messages over %d partitions (Fetch v0)\n", len(got), len(parts))

	// Commits: OffsetCommit v1 through the offset manager, read back by a new one.
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	check(err, "offset manager")
	pom, err := om.ManagePartition(topic, parts[0])
	check(err, "manage partition")
	pom.MarkOffset(17, "sarama-default")
	check(pom.Close(), "partition offset manager close")
	check(om.Close(), "offset manager close (commits)")
	om2, err := sarama.NewOffsetManagerFromClient(group, client)
	check(err, "offset manager 2")
	pom2, err := om2.ManagePartition(topic, parts[0])
	check(err, "manage partition 2")
	if off, meta := pom2.NextOffset(); off != 17 || meta != "sarama-default" {
		fail("committed offset read back as %d %q, committed 17 %q", off, meta, "sarama-default")
	}
	pom2.Close()
	om2.Close()
	fmt.Println("committed offset 17 read back (OffsetCommit v1, OffsetFetch v1)")

	// Admin: ListTopics and DescribeConfig, both DescribeConfigs v0 on the
	// wire. Sarama 1.22.1 itself refuses its admin below Version 0.11.0
	// (client-side ErrUnsupportedVersion, before any request), so this part
	// alone sets that, the lowest version at which Sarama allows them.
	adminConf := *conf
	adminConf.Version = sarama.V0_11_0_0
	admin, err := sarama.NewClusterAdmin(addrs, &adminConf)
	check(err, "cluster admin")
	defer admin.Close()
	topics, err := admin.ListTopics()
	check(err, "ListTopics")
	if d, ok := topics[topic]; !ok || int(d.NumPartitions) != len(parts) {
		fail("ListTopics: %s missing or wrong partition count: %+v", topic, topics[topic])
	}
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	check(err, "DescribeConfig")
	found := false
	for _, e := range entries {
		if e.Name == "retention.ms" {
			found = true
			if !e.Default {
				fail("retention.ms is not set on the topic, yet not reported as default")
			}
		}
	}
	if !found {
		fail("DescribeConfig: no retention.ms among %d entries", len(entries))
	}
	fmt.Printf("admin: ListTopics lists %s, DescribeConfig gave %d entries\n", topic, len(entries))
	fmt.Println("sarama (default config.Version) OK")
}
