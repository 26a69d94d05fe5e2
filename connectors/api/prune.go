package api

import (
	"context"
	"fmt"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// pruneBatch is how many events one write transaction takes out of a
// chat's log, so the store's writer is held for milliseconds.
const pruneBatch = 500

var _ bridge.Pruner = (*Connector)(nil)

// Prune implements bridge.Pruner: events logged before before leave each
// chat's log the way history trimming takes them, oldest first, so a
// client resuming from below learns it missed them ("truncated"). The
// log holds the text of what was relayed, which store.keep_messages
// bounds for the API as it does for the core.
func (c *Connector) Prune(ctx context.Context, before time.Time) (int, error) {
	if c.events == nil {
		return 0, nil
	}
	rows, err := c.store.QueryContext(ctx, `SELECT DISTINCT chat FROM api_events WHERE connector = ?`, c.name)
	if err != nil {
		return 0, fmt.Errorf("list the API's chats: %w", err)
	}
	var chats []string
	for rows.Next() {
		var chat string
		if err := rows.Scan(&chat); err != nil {
			rows.Close()
			return 0, fmt.Errorf("list the API's chats: %w", err)
		}
		chats = append(chats, chat)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list the API's chats: %w", err)
	}
	total := 0
	for _, chat := range chats {
		for ctx.Err() == nil {
			var n int64
			err := c.store.Write(ctx, func(tx *bridge.Tx) error {
				// Seqs rise with time, so the old events are the chat's
				// first ones: trimming the oldest n takes exactly them.
				err := tx.QueryRow(`SELECT COUNT(*) FROM (SELECT 1 FROM api_events
					WHERE connector = ? AND chat = ? AND created_at < ? ORDER BY seq LIMIT ?)`,
					c.name, chat, before.UnixMilli(), pruneBatch).Scan(&n)
				if err != nil || n == 0 {
					return err
				}
				// Counted again at the next append: this op may run twice.
				delete(c.events.kept, chat)
				return c.events.trimTx(tx, chat, n)
			})
			if err != nil {
				return total, fmt.Errorf("prune the API's log of %s: %w", chat, err)
			}
			total += int(n)
			if n < pruneBatch {
				break
			}
		}
	}
	return total, ctx.Err()
}
