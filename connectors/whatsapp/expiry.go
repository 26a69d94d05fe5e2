package whatsapp

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
)

// Disappearing chats. A chat's timer is learned from what WhatsApp says
// (a message carrying it, the setting changed, a group's info) and put on
// every message the link sends into the chat, so relayed messages
// disappear with the rest. What the link keeps of such a message (its
// text, for quotes; a poll's options, for votes) is forgotten when the
// message disappears: one timer, set to the earliest expiry, so nothing
// runs until one is due.

// setTimer records chat's disappearing-messages timer (0: off).
func (c *Connector) setTimer(ctx context.Context, chat types.JID, seconds uint32) {
	err := c.store.Write(ctx, func(tx *bridge.Tx) error {
		if seconds == 0 {
			_, err := tx.Exec(`DELETE FROM whatsapp_timers WHERE link = ? AND chat = ?`, c.name, chat.ToNonAD().String())
			return err
		}
		_, err := tx.Exec(`INSERT INTO whatsapp_timers (link, chat, seconds) VALUES (?, ?, ?)
			ON CONFLICT (link, chat) DO UPDATE SET seconds = excluded.seconds`, c.name, chat.ToNonAD().String(), seconds)
		return err
	})
	if err != nil {
		c.log.Warn("could not record a chat's disappearing-messages timer; messages relayed into it may not disappear", "link", c.name, "chat", chat, "err", err)
	}
}

// timer is chat's disappearing-messages timer in seconds, 0 when off.
func (c *Connector) timer(ctx context.Context, chat types.JID) (uint32, error) {
	var seconds uint32
	err := c.store.QueryRowContext(ctx, `SELECT seconds FROM whatsapp_timers WHERE link = ? AND chat = ?`,
		c.name, chat.ToNonAD().String()).Scan(&seconds)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seconds, err
}

// forgetExpired clears the text of the link's messages that disappeared
// by now and returns when the next one does.
func (c *Connector) forgetExpired(ctx context.Context, now time.Time) time.Time {
	_, err := c.store.ExecBatches(ctx, pruneBatch, `UPDATE whatsapp_messages SET text = '', poll_options = NULL, expires_at = NULL WHERE (link, chat, id) IN
		(SELECT link, chat, id FROM whatsapp_messages WHERE expires_at <= ? AND link = ? LIMIT ?)`, now.Unix(), c.name)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("could not forget the text of disappeared messages; trying again in a minute", "link", c.name, "err", err)
		}
		return now.Add(time.Minute)
	}
	next, err := c.nextExpiry(ctx)
	if err != nil && ctx.Err() == nil {
		c.log.Warn("could not read when disappearing messages expire; trying again in a minute", "link", c.name, "err", err)
		return now.Add(time.Minute)
	}
	return next
}

// nextExpiry is the earliest expiry of the link's messages, zero for none.
func (c *Connector) nextExpiry(ctx context.Context) (time.Time, error) {
	var at sql.NullInt64
	err := c.store.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM whatsapp_messages WHERE expires_at IS NOT NULL AND link = ?`, c.name).Scan(&at)
	if err != nil || !at.Valid {
		return time.Time{}, err
	}
	return time.Unix(at.Int64, 0), nil
}
