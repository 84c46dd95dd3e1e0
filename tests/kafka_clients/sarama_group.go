// Sarama (Debian's golang-github-shopify-sarama-dev 1.22.1) consumer
// groups with Sarama's DEFAULT offset settings: Consumer.Offsets.Initial
// OffsetNewest, Retention 0 (so OffsetCommit v1 with a commit timestamp of
// -1, "the broker's receive time"), auto-commit of marked offsets every
// CommitInterval (1 s) and at the end of every session.
//
// Sarama's default config.Version (MinVersion, 0.8.2) cannot form a group:
// NewConsumerGroup refuses it before sending anything (checked below). So
// the scenario runs at 0.10.2.0, the lowest Version Sarama allows for
// groups, and at 2.1.0.0, the default Version of today's IBM/sarama.
//
// Per Version, on a new 2-partition topic and a new group:
//  1. member A joins alone, 100 messages are produced (50 per partition);
//     A receives all 100 but marks only offsets 0-29 of each partition,
//     then closes: the admin reads the group's committed offsets, 30 and 30;
//  2. member B joins alone: it starts at offset 30 of each partition (not at
//     0, not at the end), 20 more are produced, and B receives exactly
//     offsets 30-59 of each partition (60 messages), no duplicate, marking
//     each;
//  3. member C joins while B runs and 40 messages are produced during the
//     rebalance, then 20 more: each partition's new owner starts exactly
//     where B's deliveries in it ended (B's session flushes its marks when
//     the rebalance ends it), both members own one partition, and the 60
//     messages of this phase are each received exactly once; nothing of
//     phases 1-2 is received again. The admin reads 90 and 90 at the end.
//
// Usage: sarama_group BROKER_ADDR. Exits non-zero with a message on any
// mismatch. SARAMA_LOG=1 sends Sarama's own log to stderr.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

// One delivery to a member's handler.
type delivery struct {
	member     string
	generation int32
	partition  int32
	offset     int64
}

// One claim a member's session started consuming.
type claim struct {
	member     string
	generation int32
	partition  int32
	initial    int64
}

// What every member saw, shared by all of them.
type journal struct {
	mu         sync.Mutex
	deliveries []delivery
	claims     []claim
	errors     []string
}

func (j *journal) snapshot() ([]delivery, []claim) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]delivery(nil), j.deliveries...), append([]claim(nil), j.claims...)
}

// The claims and errors so far, for a failure message.
func (j *journal) String() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return fmt.Sprintf("%d deliveries, claims %v, errors %v", len(j.deliveries), j.claims, j.errors)
}

// Poll until cond holds (true) or timeout (false).
func (j *journal) await(timeout time.Duration, cond func([]delivery, []claim) bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond(j.snapshot()) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond(j.snapshot())
}

type handler struct {
	name string
	j    *journal
	// Whether to mark (commit) a message after receiving it.
	mark func(*sarama.ConsumerMessage) bool
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	h.j.mu.Lock()
	h.j.claims = append(h.j.claims, claim{h.name, s.GenerationID(), c.Partition(), c.InitialOffset()})
	h.j.mu.Unlock()
	for m := range c.Messages() {
		h.j.mu.Lock()
		h.j.deliveries = append(h.j.deliveries, delivery{h.name, s.GenerationID(), m.Partition, m.Offset})
		h.j.mu.Unlock()
		if h.mark(m) {
			s.MarkMessage(m, "")
		}
	}
	return nil
}

type member struct {
	group  sarama.ConsumerGroup
	cancel context.CancelFunc
	done   chan struct{}
}

// Start a member that consumes (rejoining after every rebalance) until stopped.
func startMember(addrs []string, conf *sarama.Config, group, topic string, h *handler) *member {
	g, err := sarama.NewConsumerGroup(addrs, group, conf)
	check(err, "consumer group "+h.name)
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{g, cancel, make(chan struct{})}
	go func() {
		for e := range g.Errors() {
			h.j.mu.Lock()
			h.j.errors = append(h.j.errors, fmt.Sprintf("%s: %v", h.name, e))
			h.j.mu.Unlock()
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil {
				h.j.mu.Lock()
				h.j.errors = append(h.j.errors, fmt.Sprintf("%s: consume: %v", h.name, err))
				h.j.mu.Unlock()
				time.Sleep(500 * time.Millisecond)
			}
		}
	}()
	return m
}

// Stop: end the session (its marks are committed), leave the group.
func (m *member) stop() {
	m.cancel()
	<-m.done
	check(m.group.Close(), "close member")
}

// Produce count messages, alternating partitions 0 and 1: in one call, or
// one at a time gap apart.
func produce(p sarama.SyncProducer, topic string, count int, gap time.Duration) {
	var msgs []*sarama.ProducerMessage
	for i := 0; i < count; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic: topic, Partition: int32(i % 2), Value: sarama.StringEncoder(fmt.Sprintf("m%d", i)),
		})
	}
	if gap == 0 {
		check(p.SendMessages(msgs), "produce")
		return
	}
	for _, m := range msgs {
		_, _, err := p.SendMessage(m)
		check(err, "produce")
		time.Sleep(gap)
	}
}

func committed(admin sarama.ClusterAdmin, group, topic string) map[int32]int64 {
	r, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1}})
	check(err, "list consumer group offsets")
	out := map[int32]int64{}
	for p, b := range r.Blocks[topic] {
		if b.Err != sarama.ErrNoError {
			fail("committed offset of partition %d: %v", p, b.Err)
		}
		out[p] = b.Offset
	}
	return out
}

// Claims of member in generations after `after`, by partition.
func claimsOf(cs []claim, member string, after int32) map[int32]claim {
	out := map[int32]claim{}
	for _, c := range cs {
		if c.member == member && c.generation > after {
			out[c.partition] = c
		}
	}
	return out
}

// Offsets delivered per partition, from index `from` of the deliveries.
func offsets(ds []delivery, from int) map[int32][]int64 {
	out := map[int32][]int64{}
	for _, d := range ds[from:] {
		out[d.partition] = append(out[d.partition], d.offset)
	}
	for _, o := range out {
		sort.Slice(o, func(a, b int) bool { return o[a] < o[b] })
	}
	return out
}

// Exactly the offsets [lo, hi) of both partitions, each once.
func expectRange(what string, got map[int32][]int64, lo, hi int64) {
	for p := int32(0); p < 2; p++ {
		o := got[p]
		ok := int64(len(o)) == hi-lo
		for i := 0; ok && i < len(o); i++ {
			ok = o[i] == lo+int64(i)
		}
		if !ok {
			fail("%s: partition %d: want offsets %d..%d once each, got %v", what, p, lo, hi-1, o)
		}
	}
}

func scenario(addrs []string, version sarama.KafkaVersion) {
	began := time.Now()
	stamp := began.UnixNano()
	topic := fmt.Sprintf("sarama-group-%d", stamp)
	group := topic + "-g"
	conf := sarama.NewConfig() // every offset setting left at its default
	conf.Version = version
	conf.ClientID = "sarama-group-" + version.String()
	conf.Consumer.Return.Errors = true
	conf.Producer.Return.Successes = true
	conf.Producer.Partitioner = sarama.NewManualPartitioner
	conf.Metadata.Retry.Backoff = 200 * time.Millisecond
	if conf.Consumer.Offsets.Initial != sarama.OffsetNewest || conf.Consumer.Offsets.Retention != 0 ||
		conf.Consumer.Offsets.CommitInterval != time.Second {
		fail("Sarama's default offset settings are not what this test describes")
	}

	admin, err := sarama.NewClusterAdmin(addrs, conf)
	check(err, "admin")
	defer admin.Close()
	check(admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false), "create topic")
	producer, err := sarama.NewSyncProducer(addrs, conf)
	check(err, "producer")
	defer producer.Close()

	j := &journal{}
	const timeout = 60 * time.Second

	// 1. A alone: receives all 100, marks offsets 0-29 of each partition.
	a := startMember(addrs, conf, group, topic, &handler{"A", j, func(m *sarama.ConsumerMessage) bool { return m.Offset < 30 }})
	if !j.await(timeout, func(_ []delivery, cs []claim) bool { return len(claimsOf(cs, "A", 0)) == 2 }) {
		fail("member A did not get both partitions: %v", j)
	}
	// No commit yet: A's claims start at OffsetNewest, which Sarama resolved
	// (ListOffsets) before calling ConsumeClaim, so A sees all that follows.
	_, cs := j.snapshot()
	for p, c := range claimsOf(cs, "A", 0) {
		if c.initial != sarama.OffsetNewest {
			fail("A starts partition %d at %d, want OffsetNewest (no commit yet)", p, c.initial)
		}
	}
	produce(producer, topic, 100, 0)
	if !j.await(timeout, func(ds []delivery, _ []claim) bool { return len(ds) >= 100 }) {
		fail("A did not receive 100: %v", j)
	}
	a.stop()
	ds, _ := j.snapshot()
	expectRange("A", offsets(ds, 0), 0, 50)
	if c := committed(admin, group, topic); c[0] != 30 || c[1] != 30 {
		fail("after A closed, committed %v, want 30 and 30", c)
	}
	fmt.Printf("%5.1f s ", time.Since(began).Seconds())
	fmt.Println("A: received 100, marked 30+30, closed; committed 30 and 30")

	// 2. B alone resumes at the commits.
	seen := len(ds)
	b := startMember(addrs, conf, group, topic, &handler{"B", j, func(*sarama.ConsumerMessage) bool { return true }})
	if !j.await(timeout, func(_ []delivery, cs []claim) bool { return len(claimsOf(cs, "B", 0)) == 2 }) {
		fail("member B did not get both partitions: %v", j)
	}
	var genB int32
	_, cs = j.snapshot()
	for p, c := range claimsOf(cs, "B", 0) {
		if c.initial != 30 {
			fail("B starts partition %d at %d, want the committed 30", p, c.initial)
		}
		genB = c.generation
	}
	produce(producer, topic, 20, 0)
	if !j.await(timeout, func(ds []delivery, _ []claim) bool { return len(ds)-seen >= 60 }) {
		fail("B did not receive 60 after the first %d: %v", seen, j)
	}
	time.Sleep(2 * time.Second) // anything more would be a re-read
	ds, _ = j.snapshot()
	expectRange("B", offsets(ds, seen), 30, 60)
	fmt.Printf("%5.1f s ", time.Since(began).Seconds())
	fmt.Println("B: started at 30 and 30, received exactly offsets 30-59 of each partition (60)")

	// 3. C joins while B runs; 40 are produced during the rebalance, 20 after.
	seen = len(ds)
	c := startMember(addrs, conf, group, topic, &handler{"C", j, func(*sarama.ConsumerMessage) bool { return true }})
	produce(producer, topic, 40, 100*time.Millisecond)
	rebalanced := func(_ []delivery, cs []claim) bool {
		nb, nc := claimsOf(cs, "B", genB), claimsOf(cs, "C", 0)
		return len(nb) == 1 && len(nc) == 1
	}
	if !j.await(timeout, rebalanced) {
		fail("no rebalance giving B and C one partition each: %v", j)
	}
	produce(producer, topic, 20, 0)
	if !j.await(timeout, func(ds []delivery, _ []claim) bool { return len(ds)-seen >= 60 }) {
		fail("B and C did not receive 60 after the first %d: %v", seen, j)
	}
	time.Sleep(2 * time.Second)
	c.stop()
	b.stop()
	ds, cs = j.snapshot()
	expectRange("B and C after C joined", offsets(ds, seen), 60, 90)
	// Every claim after B's first generation starts right after the last
	// offset delivered in that partition in the generations before it: B's
	// marks were committed when the rebalance ended its session.
	newer := 0
	for _, cl := range cs {
		if cl.generation <= genB {
			continue
		}
		newer++
		last := int64(-1)
		for _, d := range ds {
			if d.partition == cl.partition && d.generation < cl.generation && d.offset > last {
				last = d.offset
			}
		}
		if cl.initial != last+1 {
			fail("%s starts partition %d at %d in generation %d; the last delivered before was %d",
				cl.member, cl.partition, cl.initial, cl.generation, last)
		}
	}
	if got := committed(admin, group, topic); got[0] != 90 || got[1] != 90 {
		fail("after B and C closed, committed %v, want 90 and 90", got)
	}
	oldGen := 0 // phase 3 deliveries B got before the rebalance ended its session
	for _, d := range ds[seen:] {
		if d.generation == genB {
			oldGen++
		}
	}
	fmt.Printf("%5.1f s ", time.Since(began).Seconds())
	fmt.Printf("C joined: rebalanced (%d claims after generation %d, each at the next uncommitted offset); "+
		"offsets 60-89 of each partition received once (60: %d by B before the rebalance, %d after); "+
		"committed 90 and 90\n", newer, genB, oldGen, len(ds)-seen-oldGen)
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.errors) > 0 {
		fmt.Printf("errors Sarama reported (not fatal): %v\n", j.errors)
	}
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: sarama_group BROKER_ADDR")
	}
	if os.Getenv("SARAMA_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}
	addrs := []string{os.Args[1]}
	def := sarama.NewConfig()
	if def.Version != sarama.MinVersion {
		fail("expected the default Version %v, have %v", sarama.MinVersion, def.Version)
	}
	if _, err := sarama.NewConsumerGroup(addrs, "never-formed", def); err == nil {
		fail("Sarama formed a consumer group at its default Version %v", def.Version)
	} else {
		fmt.Printf("default Version %v: %v\n", def.Version, err)
	}
	for _, v := range []sarama.KafkaVersion{sarama.V0_10_2_0, sarama.V2_1_0_0} {
		start := time.Now()
		scenario(addrs, v)
		fmt.Printf("Version %v: ok (%.1f s)\n", v, time.Since(start).Seconds())
	}
}
