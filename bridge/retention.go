package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Pruner is implemented by connectors that keep their own per-message
// records (WhatsApp keeps what replying to a message needs, its text
// among them). The core's prune run, which drops its message map past
// store.keep_messages, asks each to delete its records of messages older
// than before and logs the count. It should delete in short write
// transactions and stop when ctx ends.
type Pruner interface {
	Prune(ctx context.Context, before time.Time) (int, error)
}

// pruneFirstAfter is when the first prune runs after Start: late enough
// that it never slows a start's catch-up, soon enough that a daemon
// restarted daily still prunes (tests shorten it). pruneEvery spaces the
// later runs.
var pruneFirstAfter = 5 * time.Minute

const pruneEvery = 24 * time.Hour

// pruneBatch is how many messages one write transaction deletes, so the
// store's single writer is held for milliseconds, not for the whole run.
const pruneBatch = 500

// retention runs Bridge.Prune on a timer from Start until Stop.
type retention struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startRetention arms the prune timer; with keep_messages 0 there is
// nothing to prune and nothing runs.
func (b *Bridge) startRetention() {
	if b.keepMessages <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &retention{cancel: cancel, done: make(chan struct{})}
	b.retention = r
	first := pruneFirstAfter
	go func() {
		defer close(r.done)
		// Reset after each run, so runs never overlap or pile up.
		t := time.NewTimer(first)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := b.Prune(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("could not prune old messages; trying again in 24h", "err", err)
			}
			t.Reset(pruneEvery)
		}
	}()
}

// stopRetention ends a prune run between batches and waits for it,
// within ctx.
func (b *Bridge) stopRetention(ctx context.Context) error {
	r := b.retention
	if r == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the prune of old messages did not stop: %w", ctx.Err())
	}
}

// Prune deletes what is older than store.keep_messages (none when it is
// 0): the message map's messages with their native ids, failed outbox
// rows, and what connectors that are Pruners recorded. A message an
// outbox row still names is kept until that row is gone, since its
// delivery needs it. A reply, edit or reaction to a pruned message is
// then relayed as one to an unknown message. It returns how many
// messages it deleted; it runs in batches and stops early when ctx ends.
func (b *Bridge) Prune(ctx context.Context) (int, error) {
	if b.keepMessages <= 0 {
		return 0, nil
	}
	before := time.Now().Add(-b.keepMessages)
	failed, err := pruneFailed(ctx, b.store, before)
	if err != nil {
		return 0, fmt.Errorf("prune failed deliveries: %w", err)
	}
	msgs, err := pruneMessages(ctx, b.store, before)
	if err != nil {
		return msgs, fmt.Errorf("prune the message map: %w", err)
	}
	var errs []error
	attrs := []any{"failed_deliveries", failed}
	cs := b.conns()
	for _, name := range cs.names {
		p, ok := cs.conns[name].(Pruner)
		if !ok {
			continue
		}
		n, err := p.Prune(ctx, before)
		if err != nil {
			errs = append(errs, fmt.Errorf("connector %s: %w", name, err))
		}
		if n > 0 {
			attrs = append(attrs, name, n)
		}
	}
	if msgs > 0 || failed > 0 || len(attrs) > 2 {
		b.log.Info(fmt.Sprintf("pruned %d messages older than %s (store.keep_messages)", msgs, before.UTC().Format(time.RFC3339)), attrs...)
	}
	return msgs, errors.Join(errs...)
}

// pruneFailed deletes outbox rows that failed before before; they were
// kept only for inspection.
func pruneFailed(ctx context.Context, s *Store, before time.Time) (int, error) {
	return s.ExecBatches(ctx, pruneBatch, `DELETE FROM outbox WHERE id IN
		(SELECT id FROM outbox WHERE failed = 1 AND created_at < ? LIMIT ?)`, before.UnixMilli())
}

// pruneMessages deletes messages created before before, with every
// native id that maps to them, leaving those an outbox row names. The
// newest message always stays: the ledger takes its next id from the
// highest one, and a reused id could meet a stale reference to the old.
func pruneMessages(ctx context.Context, s *Store, before time.Time) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n := 0
		err := s.Write(ctx, func(tx *Tx) error {
			n = 0
			return pruneMessageBatch(tx, before, &n)
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	return total, nil
}

// pruneMessageBatch deletes up to pruneBatch messages; n counts them.
// The outbox is checked in the same transaction that deletes, so a reply
// accepted meanwhile keeps its target.
func pruneMessageBatch(tx *Tx, before time.Time, n *int) error {
	rows, err := tx.Query(`SELECT id, origin_connector, origin_chat, origin_native FROM messages m
		WHERE created_at < ?1 AND id < (SELECT MAX(id) FROM messages)
			AND NOT EXISTS (SELECT 1 FROM outbox WHERE msg = m.id)
			AND NOT EXISTS (SELECT 1 FROM outbox WHERE reply_msg = m.id)
			AND NOT EXISTS (SELECT 1 FROM outbox WHERE target_msg = m.id)
			AND NOT EXISTS (SELECT 1 FROM outbox WHERE reaction_msg = m.id)
		ORDER BY created_at LIMIT ?2`, before.UnixMilli(), pruneBatch)
	if err != nil {
		return err
	}
	type origin struct {
		id                      int64
		connector, chat, native string
	}
	var old []origin
	for rows.Next() {
		var o origin
		if err := rows.Scan(&o.id, &o.connector, &o.chat, &o.native); err != nil {
			rows.Close()
			return err
		}
		old = append(old, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, o := range old {
		for _, q := range []struct {
			sql  string
			args []any
		}{
			// The origin id by its key; copies and aliases by their
			// message, each through its partial index.
			{`DELETE FROM native_ids WHERE connector = ? AND chat = ? AND native_id = ? AND message_id = ?`, []any{o.connector, o.chat, o.native, o.id}},
			{`DELETE FROM native_ids WHERE message_id = ? AND role = 1`, []any{o.id}},
			{`DELETE FROM native_ids WHERE message_id = ? AND role = 2`, []any{o.id}},
			{`DELETE FROM messages WHERE id = ?`, []any{o.id}},
		} {
			if _, err := tx.Exec(q.sql, q.args...); err != nil {
				return err
			}
		}
	}
	*n = len(old)
	return nil
}
