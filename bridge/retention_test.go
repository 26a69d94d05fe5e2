package bridge_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// age makes every message and outbox row the store holds two years old,
// past the default store.keep_messages.
func age(t *testing.T, h *bridgetest.Harness) {
	t.Helper()
	old := time.Now().Add(-2 * 365 * 24 * time.Hour).UnixMilli()
	err := h.Store.Write(context.Background(), func(tx *bridge.Tx) error {
		if _, err := tx.Exec(`UPDATE messages SET created_at = ?`, old); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE outbox SET created_at = ?`, old)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, h *bridgetest.Harness, query string, args ...any) int {
	t.Helper()
	var n int
	if err := h.Store.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func prune(t *testing.T, h *bridgetest.Harness) int {
	t.Helper()
	n, err := h.Bridge.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPruneDropsOldMessagesKeepsWhatDeliveriesNeed(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	b.FailWith(func(out *bridge.Outgoing) error {
		if out.Text == "doomed" {
			return bridge.Permanentf("refused")
		}
		return nil
	})
	h.Inject(msg("a", "x", "a1", "old one"))
	h.Inject(msg("a", "x", "a2", "old, replied to later"))
	h.Inject(msg("a", "x", "a3", "doomed"))
	edit := act(bridge.KindEdit, "a", "x", "a1-edit", "a1")
	edit.Text = "old one, edited"
	h.Inject(edit)
	h.Inject(msg("a", "x", "a4", "old two"))
	b.WaitSent(t, 4) // a1, a2, the edit, a4
	waitFor(t, func() bool { return count(t, h, `SELECT COUNT(*) FROM outbox WHERE failed = 0`) == 0 })
	if n := count(t, h, `SELECT COUNT(*) FROM outbox WHERE failed = 1`); n != 1 {
		t.Fatalf("failed outbox rows = %d, want 1 (doomed)", n)
	}

	// A reply to a2 waits on a blocked destination: its outbox row names
	// a2 (the reply) and itself (the message).
	release := b.Block()
	defer release()
	reply := msg("a", "x", "a5", "a reply")
	reply.ReplyTo = "a2"
	h.Inject(reply)
	b.WaitBlocked(t)
	age(t, h)
	h.Inject(msg("b", "y", "b-new", "recent"))
	a.WaitSent(t, 1)

	if n := prune(t, h); n != 3 {
		t.Errorf("pruned %d messages, want 3 (a1, a3, a4)", n)
	}
	for _, id := range []string{"a1", "a1-edit", "a3", "a4"} {
		if n := count(t, h, `SELECT COUNT(*) FROM native_ids WHERE connector = 'a' AND native_id = ?`, id); n != 0 {
			t.Errorf("native id %s is still mapped", id)
		}
	}
	if n := count(t, h, `SELECT COUNT(*) FROM native_ids WHERE message_id IS NOT NULL AND message_id NOT IN (SELECT id FROM messages)`); n != 0 {
		t.Errorf("%d native ids map to pruned messages", n)
	}
	var kept []string
	rows, err := h.Store.DB().Query(`SELECT origin_native FROM messages ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		kept = append(kept, id)
	}
	rows.Close()
	if want := []string{"a2", "a5", "b-new"}; !slices.Equal(kept, want) {
		t.Errorf("messages kept = %v, want %v", kept, want)
	}
	if n := count(t, h, `SELECT COUNT(*) FROM outbox WHERE failed = 1`); n != 0 {
		t.Errorf("%d old failed deliveries kept", n)
	}
	if n := h.Logs.Count("pruned 3 messages older than"); n != 1 {
		t.Errorf("logged the prune %d times, want once:\n%s", n, h.Logs)
	}

	// The reply kept its target: it goes as a reply to a2's copy.
	release()
	sent := b.WaitSent(t, 5)
	if sent[4].Text != "a reply" {
		t.Fatalf("5th delivery is %+v, want the reply", sent[4])
	}
	a2Copy := ""
	h.Store.QueryRow(`SELECT native_id FROM native_ids WHERE connector = 'b' AND role = 1 AND message_id =
		(SELECT id FROM messages WHERE origin_native = 'a2')`).Scan(&a2Copy)
	if sent[4].ReplyTo == "" || sent[4].ReplyTo != a2Copy {
		t.Errorf("reply to a2 went with ReplyTo %q, want a2's copy %q", sent[4].ReplyTo, a2Copy)
	}

	// A reply to a pruned message is relayed as a plain message.
	late := msg("a", "x", "a6", "replying to the pruned one")
	late.ReplyTo = "a1"
	h.Inject(late)
	sent = b.WaitSent(t, 6)
	if got := sent[5]; got.Text != late.Text || got.ReplyTo != "" {
		t.Errorf("reply to a pruned message went as %+v, want plain text", got)
	}
	waitFor(t, func() bool { return count(t, h, `SELECT COUNT(*) FROM outbox`) == 0 })

	// Delivered, a2 and the reply are needed no more and old: they go.
	if n := prune(t, h); n != 2 {
		t.Errorf("second prune removed %d, want 2 (a2, a5)", n)
	}
	// Nothing left to prune: nothing pruned, nothing logged.
	if n := prune(t, h); n != 0 {
		t.Errorf("third prune removed %d", n)
	}
	if n := h.Logs.Count("pruned "); n != 2 {
		t.Errorf("a prune that removed nothing logged:\n%s", h.Logs)
	}
}

func TestPruneKeepsRecentAndKeepsAllWhenZero(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	for i := range 3 {
		h.Inject(msg("a", "x", fmt.Sprint("m", i), "hi"))
	}
	b.WaitSent(t, 3)
	waitFor(t, func() bool { return count(t, h, `SELECT COUNT(*) FROM outbox`) == 0 })
	if n := prune(t, h); n != 0 || count(t, h, `SELECT COUNT(*) FROM messages`) != 3 {
		t.Errorf("recent messages pruned: %d", n)
	}

	age(t, h)
	h.Config.Store.KeepMessages = 0
	h.Restart()
	if n := prune(t, h); n != 0 || count(t, h, `SELECT COUNT(*) FROM messages`) != 3 || count(t, h, `SELECT COUNT(*) FROM native_ids`) != 6 {
		t.Errorf("keep_messages 0 pruned %d", n)
	}
	h.Config.Store.KeepMessages = 8760 * time.Hour
	h.Restart()
	// The newest message stays whatever its age: the next id follows it.
	if n := prune(t, h); n != 2 || count(t, h, `SELECT COUNT(*) FROM messages`) != 1 {
		t.Errorf("pruned %d of 3 old messages, want all but the newest", n)
	}
}

// TestPruneInBatches prunes more messages than one write transaction
// takes, with the bridge running.
func TestPruneInBatches(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	const n = 1234
	err := h.Store.Write(context.Background(), func(tx *bridge.Tx) error {
		for i := 1; i <= n; i++ {
			if _, err := tx.Exec(`INSERT INTO messages (id, kind, origin_connector, origin_chat, origin_native, text, created_at) VALUES (?, 'message', 'a', 'x', ?, 'old text', 0)`, i, fmt.Sprint("old", i)); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO native_ids (connector, chat, native_id, message_id, part, role) VALUES ('a', 'x', ?, ?, 0, 0), ('b', 'y', ?, ?, 0, 1)`, fmt.Sprint("old", i), i, fmt.Sprint("copy", i), i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Restart() // the ledger reads the highest id at start
	h.Inject(msg("a", "x", "new", "recent"))
	h.Fakes["b"].WaitSent(t, 1)
	start := time.Now()
	if got := prune(t, h); got != n {
		t.Errorf("pruned %d, want %d", got, n)
	}
	t.Logf("pruned %d messages in %s", n, time.Since(start))
	if left := count(t, h, `SELECT COUNT(*) FROM native_ids`); left != 2 {
		t.Errorf("%d native ids left, want the new message's 2", left)
	}
}

// TestPruneAsksPruners: a connector that keeps its own records is asked
// to prune them with the same cutoff.
func TestPruneAsksPruners(t *testing.T) {
	store, err := bridge.OpenStore(filepath.Join(t.TempDir(), "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	a := &pruningFake{Fake: bridgetest.NewFake("a", all), n: 7}
	b := bridgetest.NewFake("b", all)
	cfg := config.Defaults()
	cfg.Routes = []config.Route{bridgetest.Route("r", "a/x", "b/y")}
	logs := &bridgetest.Logs{}
	br := bridge.New(store, map[string]bridge.Connector{"a": a, "b": b}, &cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err := br.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer br.Stop(context.Background())
	want := time.Now().Add(-cfg.Store.KeepMessages)
	if _, err := br.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := a.before.Sub(want); d < 0 || d > time.Second {
		t.Errorf("Pruner asked to prune before %s, want %s", a.before, want)
	}
	if logs.Count("pruned 0 messages") != 1 || logs.Count("a=7") != 1 {
		t.Errorf("the connector's count is not logged:\n%s", logs)
	}
}

type pruningFake struct {
	*bridgetest.Fake
	n      int
	before time.Time
}

func (p *pruningFake) Prune(ctx context.Context, before time.Time) (int, error) {
	p.before = before
	return p.n, nil
}

// waitFor waits up to 5 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPruneRunsOnItsTimerAndStops: a started bridge prunes on its own,
// and stops cleanly after.
func TestPruneRunsOnItsTimerAndStops(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	h.Inject(msg("a", "x", "m1", "old"))
	h.Inject(msg("a", "x", "m2", "newest"))
	b.WaitSent(t, 2)
	waitFor(t, func() bool { return count(t, h, `SELECT COUNT(*) FROM outbox`) == 0 })
	age(t, h)
	defer bridge.SetPruneFirstAfter(10 * time.Millisecond)()
	h.Restart()
	waitFor(t, func() bool { return h.Logs.Count("pruned 1 messages older than") == 1 })
	if n := count(t, h, `SELECT COUNT(*) FROM messages`); n != 1 {
		t.Errorf("%d messages left, want the newest", n)
	}
	if err := h.Stop(5 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
}
