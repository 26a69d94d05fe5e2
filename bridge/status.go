package bridge

import (
	"context"
	"fmt"
	"time"
)

// QueueStatus is one destination chat's deliveries waiting in the outbox.
type QueueStatus struct {
	Connector string    `json:"connector"`
	Chat      string    `json:"chat"`
	Depth     int       `json:"depth"`
	Oldest    time.Time `json:"oldest"`
	// Attempts and LastError are the first waiting delivery's: what holds
	// the chat up.
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// ConnectorReport is one connector as `phonebridge status` shows it.
type ConnectorReport struct {
	Name   string    `json:"name"`
	Type   string    `json:"type"`
	State  State     `json:"state"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
}

// Connectors reports every connector's type and last state, by name.
func (b *Bridge) Connectors() []ConnectorReport {
	cs := b.conns()
	cfg := b.cfg.Load()
	states := b.Status()
	out := make([]ConnectorReport, 0, len(cs.names))
	for _, name := range cs.names {
		r := ConnectorReport{Name: name, State: states[name].State, Detail: states[name].Detail, Since: states[name].Since}
		if c := cfg.Connectors[name]; c != nil {
			r.Type = c.Type
		}
		out = append(out, r)
	}
	return out
}

// Outbox reports the chats with deliveries waiting, oldest first, and how
// many deliveries failed for good and were skipped.
func (b *Bridge) Outbox(ctx context.Context) (queues []QueueStatus, failed int, err error) {
	rows, err := b.store.QueryContext(ctx, `SELECT o.connector, o.chat, COUNT(*), MIN(o.created_at),
			(SELECT h.attempts FROM outbox h WHERE h.connector = o.connector AND h.chat = o.chat AND h.failed = 0 ORDER BY h.id LIMIT 1),
			(SELECT h.last_error FROM outbox h WHERE h.connector = o.connector AND h.chat = o.chat AND h.failed = 0 ORDER BY h.id LIMIT 1)
		FROM outbox o WHERE o.failed = 0 GROUP BY o.connector, o.chat ORDER BY MIN(o.created_at)`)
	if err != nil {
		return nil, 0, fmt.Errorf("read the outbox: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var q QueueStatus
		var oldest int64
		if err := rows.Scan(&q.Connector, &q.Chat, &q.Depth, &oldest, &q.Attempts, &q.LastError); err != nil {
			return nil, 0, fmt.Errorf("read the outbox: %w", err)
		}
		q.Oldest = time.UnixMilli(oldest)
		queues = append(queues, q)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read the outbox: %w", err)
	}
	if err := b.store.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE failed = 1`).Scan(&failed); err != nil {
		return nil, 0, fmt.Errorf("read the outbox: %w", err)
	}
	return queues, failed, nil
}
