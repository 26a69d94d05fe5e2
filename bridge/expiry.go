package bridge

import (
	"context"
	"database/sql"
	"time"

	"github.com/phonebridge/phonebridge/internal/deadline"
)

// Disappearing messages: what the core keeps of one (its text, for
// quotes) is forgotten when it expires, not after store.keep_messages.
// One timer is set to the earliest expiry, so nothing runs until one is
// due.

// expiresAt is when ev, a message of a disappearing chat, expires:
// ExpiresInSec after it was sent.
func expiresAt(ev *Event, accepted time.Time) time.Time {
	sent := ev.Time
	if sent.IsZero() {
		sent = accepted
	}
	return sent.Add(time.Duration(ev.ExpiresInSec) * time.Second)
}

// startExpiry arms the expiry timer for the earliest expiry stored.
func (b *Bridge) startExpiry(ctx context.Context) {
	b.expiry = deadline.New(b.forgetExpired)
	next, err := nextExpiry(ctx, b.store)
	if err != nil {
		b.log.Warn("could not read when disappearing messages expire; their text is forgotten when the next one arrives or at the next start", "err", err)
		return
	}
	b.expiry.At(next)
}

// forgetExpired clears the text (and a poll's words) of the messages expired by now, in
// batches, and returns when the next one expires.
func (b *Bridge) forgetExpired(ctx context.Context, now time.Time) time.Time {
	_, err := b.store.ExecBatches(ctx, pruneBatch, `UPDATE messages SET text = '', poll = NULL, expires_at = NULL WHERE id IN
		(SELECT id FROM messages WHERE expires_at <= ? LIMIT ?)`, now.UnixMilli())
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("could not forget the text of expired disappearing messages; trying again in a minute", "err", err)
		}
		return now.Add(time.Minute)
	}
	next, err := nextExpiry(ctx, b.store)
	if err != nil && ctx.Err() == nil {
		b.log.Warn("could not read when disappearing messages expire; trying again in a minute", "err", err)
		return now.Add(time.Minute)
	}
	return next
}

// nextExpiry is the earliest expiry stored, zero for none.
func nextExpiry(ctx context.Context, s *Store) (time.Time, error) {
	var ms sql.NullInt64
	if err := s.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM messages WHERE expires_at IS NOT NULL`).Scan(&ms); err != nil {
		return time.Time{}, err
	}
	if !ms.Valid {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms.Int64), nil
}
