package bridge

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The core's tables. A logical message is one message (or reaction) as the
// bridge knows it, whatever platforms it is on; native_ids maps every
// platform's id for it (its origin and each copy) to it; the outbox holds
// each accepted event once per destination chat until it is delivered.
var coreMigrations = []string{
	`CREATE TABLE messages (
		id INTEGER PRIMARY KEY,
		kind TEXT NOT NULL,
		origin_connector TEXT NOT NULL,
		origin_chat TEXT NOT NULL,
		sender_id TEXT NOT NULL DEFAULT '',
		sender_name TEXT NOT NULL DEFAULT '',
		text TEXT NOT NULL DEFAULT '',
		target_id INTEGER,
		emoji TEXT NOT NULL DEFAULT '',
		deleted INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL
	);
	CREATE INDEX messages_reactions ON messages (target_id, sender_id, emoji) WHERE target_id IS NOT NULL;
	CREATE TABLE native_ids (
		connector TEXT NOT NULL,
		chat TEXT NOT NULL,
		native_id TEXT NOT NULL,
		message_id INTEGER,
		part INTEGER NOT NULL,
		role INTEGER NOT NULL,
		PRIMARY KEY (connector, chat, native_id)
	) WITHOUT ROWID;
	CREATE INDEX native_ids_by_message ON native_ids (message_id, connector, chat, part);
	CREATE TABLE outbox (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		connector TEXT NOT NULL,
		chat TEXT NOT NULL,
		event BLOB NOT NULL,
		failed INTEGER NOT NULL DEFAULT 0,
		attempts INTEGER NOT NULL DEFAULT 0,
		next_attempt_at INTEGER NOT NULL DEFAULT 0,
		last_error TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL
	);
	CREATE INDEX outbox_queue ON outbox (connector, chat, failed, id);`,
}

// Roles of a native id.
const (
	roleOrigin = 0 // the id an inbound event had on its origin
	roleCopy   = 1 // an id the bridge created by delivering
	roleAlias  = 2 // an inbound edit's or delete's own id: points at its target
)

// Parts: >= 0 is a piece of a message's text (0 the first); partSide marks
// ids that are not the message itself (an edit's own id) so they are never
// chosen as a target.
const partSide = -1

// snippetRunes bounds the text kept per message for quote fallbacks.
const snippetRunes = 300

// stored is what the outbox keeps per delivery: the inbound event and the
// logical messages it was resolved to when it was accepted.
type stored struct {
	Event     Event `json:"e"`
	Msg       int64 `json:"m,omitempty"` // the message this event creates or acts on
	ReplyMsg  int64 `json:"r,omitempty"`
	TargetMsg int64 `json:"t,omitempty"`
	// ReactionMsg is the reaction a reaction removal undoes.
	ReactionMsg int64 `json:"x,omitempty"`
	// Quote is the replied-to, edited or reacted-to message as it was when
	// this event arrived, for destinations that get a quote instead.
	Quote *storedQuote `json:"q,omitempty"`
}

type storedQuote struct {
	Sender  string `json:"s"`
	Text    string `json:"t"`
	Deleted bool   `json:"d,omitempty"`
}

// acceptResult says what accepting an event did.
type acceptResult struct {
	duplicate bool
	echo      bool
	queued    []Endpoint
}

// acceptTx records inbound ev from the origin connector and queues it for
// dests. It runs inside the store's write transaction, possibly more than
// once, so it works on a copy of ev and sets *res from scratch.
func acceptTx(tx *sql.Tx, in *Event, dests []Endpoint, now time.Time, res *acceptResult) error {
	*res = acceptResult{}
	ev := *in
	origin := ev.Chat

	if ev.ID == "" {
		ev.ID = KeyPrefix + "in." + randomHex(8)
	} else {
		var role int
		err := tx.QueryRow(`SELECT role FROM native_ids WHERE connector = ? AND chat = ? AND native_id = ?`,
			origin.Connector, origin.ID, ev.ID).Scan(&role)
		switch {
		case err == nil:
			// Seen before: either a redelivery of an event already accepted
			// or the platform echoing something the bridge sent.
			res.echo = role == roleCopy
			res.duplicate = !res.echo
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
	}

	st := stored{}
	var err error
	if ev.ReplyTo != "" {
		if st.ReplyMsg, err = messageOf(tx, origin.Connector, origin.ID, ev.ReplyTo); err != nil {
			return err
		}
	}
	if ev.Target != "" {
		if st.TargetMsg, err = messageOf(tx, origin.Connector, origin.ID, ev.Target); err != nil {
			return err
		}
	}

	// A delete aimed at a reaction is how some platforms (Matrix) remove a
	// reaction: treat it as the removal it is.
	if ev.Kind == KindDelete && st.TargetMsg != 0 {
		var kind, emoji string
		var reacted sql.NullInt64
		err := tx.QueryRow(`SELECT kind, emoji, target_id FROM messages WHERE id = ?`, st.TargetMsg).Scan(&kind, &emoji, &reacted)
		if err != nil {
			return err
		}
		if kind == string(KindReaction) {
			ev.Kind = KindReactionRemove
			ev.Emoji = emoji
			st.ReactionMsg = st.TargetMsg
			st.TargetMsg = reacted.Int64
		}
	}

	quoteMsg := st.TargetMsg
	if ev.Kind == KindMessage {
		quoteMsg = st.ReplyMsg
	}
	if quoteMsg != 0 && ev.Kind != KindDelete && ev.Kind != KindReactionRemove {
		q := storedQuote{}
		err := tx.QueryRow(`SELECT sender_name, text, deleted FROM messages WHERE id = ?`, quoteMsg).Scan(&q.Sender, &q.Text, &q.Deleted)
		if err != nil {
			return err
		}
		st.Quote = &q
	}

	nowMS := now.UnixMilli()
	switch ev.Kind {
	case KindMessage, KindReaction:
		var target any
		if ev.Kind == KindReaction && st.TargetMsg != 0 {
			target = st.TargetMsg
		}
		r, err := tx.Exec(`INSERT INTO messages (kind, origin_connector, origin_chat, sender_id, sender_name, text, target_id, emoji, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			ev.Kind, origin.Connector, origin.ID, ev.Sender.ID, ev.Sender.Name, snippet(messageText(&ev)), target, ev.Emoji, nowMS)
		if err != nil {
			return err
		}
		if st.Msg, err = r.LastInsertId(); err != nil {
			return err
		}
		if err := putNative(tx, origin.Connector, origin.ID, ev.ID, st.Msg, 0, roleOrigin); err != nil {
			return err
		}
	default:
		st.Msg = st.TargetMsg
		switch {
		case ev.Kind == KindEdit && st.TargetMsg != 0:
			if _, err := tx.Exec(`UPDATE messages SET text = ? WHERE id = ?`, snippet(ev.Text), st.TargetMsg); err != nil {
				return err
			}
		case ev.Kind == KindDelete && st.TargetMsg != 0:
			if _, err := tx.Exec(`UPDATE messages SET deleted = 1 WHERE id = ?`, st.TargetMsg); err != nil {
				return err
			}
		case ev.Kind == KindReactionRemove && st.TargetMsg != 0:
			if st.ReactionMsg == 0 {
				err := tx.QueryRow(`SELECT id FROM messages WHERE target_id = ? AND sender_id = ? AND emoji = ? AND kind = ? AND deleted = 0
					ORDER BY id DESC LIMIT 1`, st.TargetMsg, ev.Sender.ID, ev.Emoji, KindReaction).Scan(&st.ReactionMsg)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
			}
			if st.ReactionMsg != 0 {
				if _, err := tx.Exec(`UPDATE messages SET deleted = 1 WHERE id = ?`, st.ReactionMsg); err != nil {
					return err
				}
			}
		}
		// The event's own id is remembered so a redelivery is recognised
		// and a reply to an edit finds the edited message.
		if err := putNative(tx, origin.Connector, origin.ID, ev.ID, st.Msg, partSide, roleAlias); err != nil {
			return err
		}
	}

	st.Event = ev
	payload, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	for _, d := range dests {
		if _, err := tx.Exec(`INSERT INTO outbox (connector, chat, event, created_at) VALUES (?, ?, ?, ?)`,
			d.Connector, d.Chat, payload, nowMS); err != nil {
			return err
		}
	}
	res.queued = dests
	return nil
}

func putNative(tx *sql.Tx, connector, chat, native string, msg int64, part, role int) error {
	var m any
	if msg != 0 {
		m = msg
	}
	_, err := tx.Exec(`INSERT INTO native_ids (connector, chat, native_id, message_id, part, role) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (connector, chat, native_id) DO UPDATE SET message_id = excluded.message_id, part = excluded.part, role = excluded.role`,
		connector, chat, native, m, part, role)
	return err
}

type querier interface {
	QueryRow(query string, args ...any) *sql.Row
}

// messageOf returns the logical message a native id in a chat stands for,
// 0 when the bridge never saw it.
func messageOf(q querier, connector, chat, native string) (int64, error) {
	var msg sql.NullInt64
	err := q.QueryRow(`SELECT message_id FROM native_ids WHERE connector = ? AND chat = ? AND native_id = ?`,
		connector, chat, native).Scan(&msg)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return msg.Int64, err
}

// pendingRow is one undelivered outbox entry.
type pendingRow struct {
	id        int64
	ev        stored
	attempts  int
	nextAt    time.Time
	createdAt time.Time
}

// pending returns up to limit undelivered rows for dest after id after.
func pending(ctx context.Context, db *sql.DB, dest Endpoint, after int64, limit int) ([]pendingRow, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, event, attempts, next_attempt_at, created_at FROM outbox
		WHERE connector = ? AND chat = ? AND failed = 0 AND id > ? ORDER BY id LIMIT ?`, dest.Connector, dest.Chat, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pendingRow
	for rows.Next() {
		var r pendingRow
		var payload []byte
		var next, created int64
		if err := rows.Scan(&r.id, &payload, &r.attempts, &next, &created); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(payload, &r.ev); err != nil {
			// A row we cannot read can never be delivered; say which, and
			// let the worker fail it rather than block the chat forever.
			r.ev = stored{Event: Event{Kind: "unreadable"}}
		}
		r.nextAt = time.UnixMilli(next)
		r.createdAt = time.UnixMilli(created)
		out = append(out, r)
	}
	return out, rows.Err()
}

// pendingDestinations lists every chat with undelivered events.
func pendingDestinations(ctx context.Context, db *sql.DB) ([]Endpoint, error) {
	rows, err := db.QueryContext(ctx, `SELECT DISTINCT connector, chat FROM outbox WHERE failed = 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Endpoint
	for rows.Next() {
		var e Endpoint
		if err := rows.Scan(&e.Connector, &e.Chat); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// nativeOn returns the native ids of msg's parts in a chat, in part order;
// nil when it is not there.
func nativeOn(ctx context.Context, db *sql.DB, msg int64, dest Endpoint) ([]string, error) {
	if msg == 0 {
		return nil, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT native_id FROM native_ids
		WHERE message_id = ? AND connector = ? AND chat = ? AND part >= 0 AND role != ? ORDER BY part`,
		msg, dest.Connector, dest.Chat, roleAlias)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// quoteOf is the quote for an event: the one taken when it arrived, else
// (its target was unknown then) the message as it is now; nil if unknown.
func quoteOf(ctx context.Context, db *sql.DB, st *stored, msg int64) (*storedQuote, error) {
	if st.Quote != nil || msg == 0 {
		return st.Quote, nil
	}
	var q storedQuote
	err := db.QueryRowContext(ctx, `SELECT sender_name, text, deleted FROM messages WHERE id = ?`, msg).Scan(&q.Sender, &q.Text, &q.Deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &q, nil
}

// delivered records a finished delivery: the ids it created and the end of
// the outbox row.
func delivered(tx *sql.Tx, rowID int64, dest Endpoint, copies []createdCopy) error {
	for _, c := range copies {
		if c.native == "" {
			continue
		}
		if err := putNative(tx, dest.Connector, dest.Chat, c.native, c.msg, c.part, roleCopy); err != nil {
			return err
		}
	}
	_, err := tx.Exec(`DELETE FROM outbox WHERE id = ?`, rowID)
	return err
}

// createdCopy is one id a delivery created on its destination.
type createdCopy struct {
	native string
	msg    int64
	part   int
}

func deliveryKey(rowID int64, part int) string {
	k := KeyPrefix + strconv.FormatInt(rowID, 36)
	if part > 0 {
		k += "." + strconv.Itoa(part)
	}
	return k
}

func snippet(s string) string {
	if len(s) <= snippetRunes { // bytes >= runes, so this is a cheap upper bound
		return s
	}
	r := []rune(s)
	if len(r) <= snippetRunes {
		return s
	}
	return string(r[:snippetRunes]) + "…"
}

// messageText is what a message says, for quotes: its text, else its
// media's caption or name.
func messageText(ev *Event) string {
	if ev.Text != "" || len(ev.Media) == 0 {
		return ev.Text
	}
	m := ev.Media[0]
	if m.Caption != "" {
		return m.Caption
	}
	return strings.TrimSpace("[" + mediaWord(m.MIME) + "] " + m.Name)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b)
}
