package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/config"
)

// raConn is a connector for the read-ahead test: Start keeps the sink,
// Send is the test's.
type raConn struct {
	sink Sink
	send func(*Outgoing) error
}

func (c *raConn) Start(_ context.Context, s Sink) error { c.sink = s; return nil }
func (c *raConn) Stop(context.Context) error            { return nil }
func (c *raConn) Capabilities() Capabilities            { return Capabilities{Replies: true} }
func (c *raConn) Send(_ context.Context, out *Outgoing) (string, error) {
	if c.send == nil {
		return "", nil
	}
	return out.Key, c.send(out)
}

// TestSpilledQueueReadsAheadWhileSending: the outbox read of a spilled
// chat's next batch begins while the last send of the batch before is
// still unanswered, so it does not sit between the two sends; every row is
// still delivered once, in order.
func TestSpilledQueueReadsAheadWhileSending(t *testing.T) {
	const n = maxBuffered + batchSize/2 // spilled: more than memory holds
	const fullBatches = n / batchSize

	var (
		mu      sync.Mutex
		began   = map[int64]chan struct{}{} // read of the rows after id begun
		ends    = map[string]int64{}        // key of a full batch's last row → its id
		sent    []string
		sends   = map[string]int{}
		waited  int
		late    []string
		allIn   = make(chan struct{})
		drained = make(chan struct{})
	)
	beganCh := func(id int64) chan struct{} { // under mu
		ch := began[id]
		if ch == nil {
			ch = make(chan struct{})
			began[id] = ch
		}
		return ch
	}
	old := readPending
	t.Cleanup(func() { readPending = old })
	readPending = func(ctx context.Context, db *Store, dest Endpoint, after int64, limit int) ([]pendingRow, error) {
		if after == 0 {
			<-allIn // batches fall the same way every run
		}
		mu.Lock()
		ch := beganCh(after)
		select {
		case <-ch:
		default:
			close(ch)
		}
		mu.Unlock()
		rows, err := pending(ctx, db, dest, after, limit)
		if err == nil && len(rows) == limit {
			last := rows[len(rows)-1].id
			mu.Lock()
			ends[deliveryKey(last, 0)] = last
			mu.Unlock()
		}
		return rows, err
	}

	src := &raConn{}
	dst := &raConn{send: func(out *Outgoing) error {
		mu.Lock()
		last, isEnd := ends[out.Key]
		ch := beganCh(last)
		failed := len(late) > 0 // one 10s wait is enough to tell
		mu.Unlock()
		if isEnd && !failed {
			// Answered only once the next batch's read has begun: without
			// read-ahead that read waits for this answer.
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				mu.Lock()
				late = append(late, fmt.Sprintf("outbox id %d", last))
				mu.Unlock()
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if isEnd {
			waited++
		}
		sends[out.Key]++
		if sends[out.Key] == 1 {
			sent = append(sent, out.Text)
		}
		if len(sent) == n {
			close(drained)
		}
		return nil
	}}

	store, err := OpenStore(filepath.Join(t.TempDir(), "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Routes = []config.Route{{Name: "r", Endpoints: []config.Endpoint{
		{Connector: "src", Chat: "x", Direction: config.Both},
		{Connector: "dst", Chat: "y", Direction: config.Both},
	}}}
	b := New(store, map[string]Connector{"src": src, "dst": dst}, &cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		store.Close()
	})

	errs := make(chan error, n)
	for i := range n {
		ev := &Event{Kind: KindMessage, Chat: ChatRef{ID: "x"}, ID: fmt.Sprint("m", i), Sender: Sender{ID: "u", Name: "Ann"}, Text: fmt.Sprint(i)}
		src.sink.Submit(ev, func(err error) { errs <- err })
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(allIn)

	select {
	case <-drained:
	case <-time.After(60 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d events delivered in 60s", len(sent), n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(late) > 0 {
		t.Errorf("the outbox read of the rows after %v had not begun 10s into the send of that row: the next batch is read only after the last send of the one before", late)
	}
	if waited != fullBatches {
		t.Errorf("%d sends ended a full batch, want %d", waited, fullBatches)
	}
	for i, text := range sent {
		if text != fmt.Sprint(i) {
			t.Fatalf("delivery %d is %q: order broken", i, text)
		}
	}
	for k, c := range sends {
		if c != 1 {
			t.Errorf("%s sent %d times, want once", k, c)
		}
	}
}
