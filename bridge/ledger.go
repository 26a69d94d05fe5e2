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
		origin_native TEXT NOT NULL,
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
	-- Only copies need finding by message: an origin id is on its messages row.
	CREATE INDEX native_ids_copies ON native_ids (message_id, connector, chat, part) WHERE role = 1;
	CREATE TABLE outbox (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		connector TEXT NOT NULL,
		chat TEXT NOT NULL,
		event BLOB NOT NULL,
		msg INTEGER,
		reply_msg INTEGER,
		target_msg INTEGER,
		reaction_msg INTEGER,
		quote BLOB,
		failed INTEGER NOT NULL DEFAULT 0,
		attempts INTEGER NOT NULL DEFAULT 0,
		next_attempt_at INTEGER NOT NULL DEFAULT 0,
		last_error TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL
	);
	CREATE INDEX outbox_queue ON outbox (connector, chat, failed, id);`,
	// core_state holds "running" while a bridge runs: found at start, it
	// says the last run did not stop cleanly.
	`CREATE TABLE core_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;`,
	// For the prune of old messages (retention.go): messages by age, an
	// alias by its message, and the outbox's references, so checking that
	// no delivery still needs a message is four index lookups.
	`CREATE INDEX messages_created ON messages (created_at);
	CREATE INDEX native_ids_aliases ON native_ids (message_id) WHERE role = 2;
	CREATE INDEX outbox_msg ON outbox (msg) WHERE msg IS NOT NULL;
	CREATE INDEX outbox_reply_msg ON outbox (reply_msg) WHERE reply_msg IS NOT NULL;
	CREATE INDEX outbox_target_msg ON outbox (target_msg) WHERE target_msg IS NOT NULL;
	CREATE INDEX outbox_reaction_msg ON outbox (reaction_msg) WHERE reaction_msg IS NOT NULL;`,
	// expires_at (unix ms): when a disappearing message's text is
	// forgotten (expiry.go).
	`ALTER TABLE messages ADD COLUMN expires_at INTEGER;
	CREATE INDEX messages_expiring ON messages (expires_at) WHERE expires_at IS NOT NULL;`,
	// poll (JSON): a poll's question and options, so votes can be shown
	// and counted; vote (JSON): a vote's choices, its sender_id the voter
	// (ownerVoter for the owner), deleted once a newer vote replaces it.
	`ALTER TABLE messages ADD COLUMN poll TEXT;
	ALTER TABLE messages ADD COLUMN vote TEXT;`,
}

// ownerVoter is the voter key of the owner's votes, the same person
// whichever platform they vote on; no platform's ids look like it.
const ownerVoter = "(owner)"

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

// stored is one outbox row as the worker sees it: the inbound event and
// the logical messages it was resolved to when it was accepted.
type stored struct {
	Event     Event
	Msg       int64 // the message this event creates or acts on
	ReplyMsg  int64
	TargetMsg int64
	// ReactionMsg is the reaction a reaction removal undoes, or the one a
	// reaction replaces (Event.ReplacesReaction).
	ReactionMsg int64
	// Quote is the replied-to, edited or reacted-to message as it was when
	// this event arrived, for destinations that get a quote instead.
	Quote *storedQuote
}

type storedQuote struct {
	Sender  string `json:"s"`
	Text    string `json:"t"`
	Deleted bool   `json:"d,omitempty"`
}

// nullable stores an unset id as NULL.
func nullable(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// acceptResult says what accepting an event did.
type acceptResult struct {
	duplicate bool
	echo      bool
	// queued holds the outbox rows written, one per destination, so the
	// worker can take them from memory instead of reading them back.
	queued []queuedRow
	// expires is when the message's text is forgotten (a disappearing
	// chat's), zero for never.
	expires time.Time
}

type queuedRow struct {
	dest Endpoint
	row  pendingRow
}

// ledger allocates logical message ids. Only the store's writer goroutine
// uses it (inside write ops), so it needs no lock; an op that runs twice
// just leaves a gap.
type ledger struct {
	lastMsg int64
}

// load reads the highest message id already used.
func (l *ledger) load(ctx context.Context, s *Store) error {
	return s.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM messages`).Scan(&l.lastMsg)
}

// accept records inbound ev from its origin connector and queues it for
// dests; payload is ev as JSON, made before the transaction so the writer
// does not spend its time encoding. It runs inside the store's write
// transaction, possibly more than once, so it works on a copy of ev and
// sets *res from scratch.
func (l *ledger) accept(tx *Tx, in *Event, payload []byte, dests []Endpoint, now time.Time, res *acceptResult) error {
	*res = acceptResult{}
	ev := *in
	origin := ev.Chat

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
			if payload, err = json.Marshal(&ev); err != nil {
				return err
			}
		}
	}

	// Claim the event's id. Messages and reactions are new logical
	// messages; other kinds point at their target, so a reply to an edit
	// finds the edited message. A conflict means the id was seen before.
	claim, part, role := st.TargetMsg, partSide, roleAlias
	if ev.Kind == KindMessage || ev.Kind == KindReaction || ev.Kind == KindVote {
		l.lastMsg++
		st.Msg = l.lastMsg
		claim, part, role = st.Msg, 0, roleOrigin
	} else {
		st.Msg = st.TargetMsg
	}
	var claimArg any
	if claim != 0 {
		claimArg = claim
	}
	r, err := tx.Exec(`INSERT INTO native_ids (connector, chat, native_id, message_id, part, role) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (connector, chat, native_id) DO NOTHING`, origin.Connector, origin.ID, ev.ID, claimArg, part, role)
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		// Seen before: a redelivery of an event already accepted, or the
		// platform echoing something the bridge sent.
		var seen int
		if err := tx.QueryRow(`SELECT role FROM native_ids WHERE connector = ? AND chat = ? AND native_id = ?`,
			origin.Connector, origin.ID, ev.ID).Scan(&seen); err != nil {
			return err
		}
		res.echo = seen == roleCopy
		res.duplicate = !res.echo
		return nil
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
	if ev.Kind == KindReaction && ev.ReplacesReaction && st.TargetMsg != 0 {
		// The sender's reaction still standing on the message goes.
		err := tx.QueryRow(`SELECT id FROM messages WHERE target_id = ? AND sender_id = ? AND kind = ? AND deleted = 0
			ORDER BY id DESC LIMIT 1`, st.TargetMsg, ev.Sender.ID, KindReaction).Scan(&st.ReactionMsg)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if st.ReactionMsg != 0 {
			if _, err := tx.Exec(`UPDATE messages SET deleted = 1 WHERE id = ?`, st.ReactionMsg); err != nil {
				return err
			}
		}
	}
	switch ev.Kind {
	case KindMessage, KindReaction, KindVote:
		var target any
		if ev.Kind != KindMessage && st.TargetMsg != 0 {
			target = st.TargetMsg
		}
		var expires any
		if ev.ExpiresInSec > 0 {
			res.expires = expiresAt(&ev, now)
			expires = res.expires.UnixMilli()
		}
		senderID, text := ev.Sender.ID, messageText(&ev)
		var poll, vote any
		if ev.Poll != nil {
			if poll, err = json.Marshal(ev.Poll); err != nil {
				return err
			}
		}
		if ev.Kind == KindVote {
			if senderID, vote, err = l.countVote(tx, &ev, st.TargetMsg); err != nil {
				return err
			}
			text = voteWords(ev.Vote)
			if payload, err = json.Marshal(&ev); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(`INSERT INTO messages (id, kind, origin_connector, origin_chat, origin_native, sender_id, sender_name, text, target_id, emoji, created_at, expires_at, poll, vote)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			st.Msg, ev.Kind, origin.Connector, origin.ID, ev.ID, senderID, ev.Sender.Name, snippet(text), target, ev.Emoji, nowMS, expires, poll, vote); err != nil {
			return err
		}
	default:
		switch {
		case ev.Kind == KindEdit && st.TargetMsg != 0:
			if _, err := tx.Exec(`UPDATE messages SET text = ? WHERE id = ?`, snippet(messageText(&ev)), st.TargetMsg); err != nil {
				return err
			}
		case ev.Kind == KindDelete && st.TargetMsg != 0:
			if _, err := tx.Exec(`UPDATE messages SET deleted = 1 WHERE id = ?`, st.TargetMsg); err != nil {
				return err
			}
		case ev.Kind == KindReactionRemove && st.TargetMsg != 0:
			if st.ReactionMsg == 0 {
				// Without an emoji (WhatsApp), the sender's latest reaction
				// to the message is the one removed.
				var emoji string
				err := tx.QueryRow(`SELECT id, emoji FROM messages WHERE target_id = ? AND sender_id = ? AND kind = ? AND deleted = 0
					AND (emoji = ? OR ? = '') ORDER BY id DESC LIMIT 1`, st.TargetMsg, ev.Sender.ID, KindReaction, ev.Emoji, ev.Emoji).Scan(&st.ReactionMsg, &emoji)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if ev.Emoji == "" && emoji != "" {
					ev.Emoji = emoji
					if payload, err = json.Marshal(&ev); err != nil {
						return err
					}
				}
			}
			if st.ReactionMsg != 0 {
				if _, err := tx.Exec(`UPDATE messages SET deleted = 1 WHERE id = ?`, st.ReactionMsg); err != nil {
					return err
				}
			}
		}
	}

	var quote []byte
	if st.Quote != nil {
		if quote, err = json.Marshal(st.Quote); err != nil {
			return err
		}
	}
	st.Event = ev
	for _, d := range dests {
		r, err := tx.Exec(`INSERT INTO outbox (connector, chat, event, msg, reply_msg, target_msg, reaction_msg, quote, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			d.Connector, d.Chat, payload, nullable(st.Msg), nullable(st.ReplyMsg), nullable(st.TargetMsg), nullable(st.ReactionMsg), quote, nowMS)
		if err != nil {
			return err
		}
		id, err := r.LastInsertId()
		if err != nil {
			return err
		}
		res.queued = append(res.queued, queuedRow{dest: d, row: pendingRow{id: id, ev: st, createdAt: time.UnixMilli(nowMS)}})
	}
	return nil
}

func putNative(tx *Tx, connector, chat, native string, msg int64, part, role int) error {
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
func pending(ctx context.Context, db *Store, dest Endpoint, after int64, limit int) ([]pendingRow, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, event, msg, reply_msg, target_msg, reaction_msg, quote, attempts, next_attempt_at, created_at
		FROM outbox WHERE connector = ? AND chat = ? AND failed = 0 AND id > ? ORDER BY id LIMIT ?`, dest.Connector, dest.Chat, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pendingRow
	for rows.Next() {
		var r pendingRow
		var payload, quote []byte
		var msg, reply, target, reaction sql.NullInt64
		var next, created int64
		if err := rows.Scan(&r.id, &payload, &msg, &reply, &target, &reaction, &quote, &r.attempts, &next, &created); err != nil {
			return nil, err
		}
		r.ev = stored{Msg: msg.Int64, ReplyMsg: reply.Int64, TargetMsg: target.Int64, ReactionMsg: reaction.Int64}
		if err := json.Unmarshal(payload, &r.ev.Event); err != nil {
			// A row we cannot read can never be delivered; mark it so the
			// worker fails it rather than block the chat forever.
			r.ev.Event = Event{Kind: "unreadable"}
		}
		if len(quote) > 0 {
			r.ev.Quote = &storedQuote{}
			if json.Unmarshal(quote, r.ev.Quote) != nil {
				r.ev.Quote = nil
			}
		}
		r.nextAt = time.UnixMilli(next)
		r.createdAt = time.UnixMilli(created)
		out = append(out, r)
	}
	return out, rows.Err()
}

// pendingDestinations lists every chat with undelivered events.
func pendingDestinations(ctx context.Context, db *Store) ([]Endpoint, error) {
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

// nativeOn returns the native ids of msg's parts in a chat, in part order:
// the copies the bridge made there, or the original where msg came from
// that chat; nil when it is not there.
func nativeOn(ctx context.Context, db *Store, msg int64, dest Endpoint) ([]string, error) {
	if msg == 0 {
		return nil, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT native_id, part FROM native_ids
			WHERE message_id = ?1 AND connector = ?2 AND chat = ?3 AND role = 1 AND part >= 0
		UNION ALL
		SELECT origin_native, 0 FROM messages WHERE id = ?1 AND origin_connector = ?2 AND origin_chat = ?3
		ORDER BY 2`,
		msg, dest.Connector, dest.Chat)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		var part int
		if err := rows.Scan(&id, &part); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// quoteOf is the quote for an event: the one taken when it arrived, else
// (its target was unknown then) the message as it is now; nil if unknown.
func quoteOf(ctx context.Context, db *Store, st *stored, msg int64) (*storedQuote, error) {
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

// delivered records finished deliveries to dest: the ids they created,
// and the end of its outbox rows from first to last (failed rows stay).
func delivered(tx *Tx, dest Endpoint, first, last int64, copies []createdCopy) error {
	for _, c := range copies {
		if c.native == "" {
			continue
		}
		if err := putNative(tx, dest.Connector, dest.Chat, c.native, c.msg, c.part, roleCopy); err != nil {
			return err
		}
	}
	_, err := tx.Exec(`DELETE FROM outbox WHERE connector = ? AND chat = ? AND failed = 0 AND id BETWEEN ? AND ?`,
		dest.Connector, dest.Chat, first, last)
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

// countVote records ev's vote on poll in place of the voter's earlier
// one and fills in the poll and its tally (ev.Vote is replaced, not
// changed: accept works on a copy). It returns the voter key and the
// vote's JSON for the vote's messages row.
func (l *ledger) countVote(tx *Tx, ev *Event, poll int64) (voter string, choices []byte, err error) {
	v := *ev.Vote
	v.Question, v.Options, v.Tally = "", nil, nil
	ev.Vote = &v
	voter = ev.Sender.ID
	if ev.Sender.IsOwner {
		voter = ownerVoter
	}
	if choices, err = json.Marshal(v.Choices); err != nil {
		return "", nil, err
	}
	if poll == 0 {
		return voter, choices, nil
	}
	var asked sql.NullString
	if err := tx.QueryRow(`SELECT poll FROM messages WHERE id = ?`, poll).Scan(&asked); err != nil {
		return "", nil, err
	}
	if !asked.Valid {
		return voter, choices, nil // not a poll this bridge saw asked
	}
	var p Poll
	if err := json.Unmarshal([]byte(asked.String), &p); err != nil {
		return "", nil, fmt.Errorf("poll %d is unreadable: %w", poll, err)
	}
	if _, err := tx.Exec(`UPDATE messages SET deleted = 1 WHERE target_id = ? AND sender_id = ? AND kind = ? AND deleted = 0`,
		poll, voter, KindVote); err != nil {
		return "", nil, err
	}
	v.Question, v.Options, v.Tally = p.Question, p.Options, make([]int, len(p.Options))
	rows, err := tx.Query(`SELECT vote FROM messages WHERE target_id = ? AND kind = ? AND deleted = 0`, poll, KindVote)
	if err != nil {
		return "", nil, err
	}
	defer rows.Close()
	earlier := [][]int{v.Choices}
	for rows.Next() {
		var raw sql.NullString
		if err := rows.Scan(&raw); err != nil {
			return "", nil, err
		}
		var picked []int
		if raw.Valid && json.Unmarshal([]byte(raw.String), &picked) == nil {
			earlier = append(earlier, picked)
		}
	}
	if err := rows.Err(); err != nil {
		return "", nil, err
	}
	for _, picked := range earlier {
		for _, c := range picked {
			if c >= 0 && c < len(v.Tally) {
				v.Tally[c]++
			}
		}
	}
	return voter, choices, nil
}

// messageText is what a message says, for quotes: its text, else its
// media's caption or name.
func messageText(ev *Event) string {
	if ev.Text != "" {
		return ev.Text
	}
	if l := ev.Location; l != nil && len(ev.Media) == 0 {
		return strings.TrimSpace("📍 " + l.Name)
	}
	if p := ev.Poll; p != nil {
		return "📊 " + p.Question
	}
	if len(ev.Media) == 0 {
		return ""
	}
	m := ev.Media[0]
	if m.Caption != "" {
		return m.Caption
	}
	return strings.TrimSpace("[" + MediaWord(m) + "] " + m.Name)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b)
}
