package api

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// migrations are the api component's schema steps (Store.Migrate). IF NOT
// EXISTS because several api connectors share the tables and may migrate
// at the same moment.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS api_events (
		seq        INTEGER PRIMARY KEY, -- rises with every append, across chats
		connector  TEXT    NOT NULL,
		chat       TEXT    NOT NULL,
		key        TEXT    NOT NULL, -- Outgoing.Key: the event's id on the wire
		payload    TEXT    NOT NULL, -- the event's JSON as clients receive it
		created_at INTEGER NOT NULL  -- unix milliseconds
	);
	CREATE INDEX IF NOT EXISTS api_events_chat ON api_events (connector, chat, seq);
	-- Keys are the core's delivery keys, unique across every chat.
	CREATE UNIQUE INDEX IF NOT EXISTS api_events_key ON api_events (key);
	-- trimmed_through is the highest seq trimming deleted from a chat, so a
	-- client resuming from below it learns it missed events.
	CREATE TABLE IF NOT EXISTS api_chats (
		connector       TEXT    NOT NULL,
		chat            TEXT    NOT NULL,
		trimmed_through INTEGER NOT NULL,
		PRIMARY KEY (connector, chat)
	) WITHOUT ROWID;
	CREATE TABLE IF NOT EXISTS api_media (
		connector TEXT NOT NULL,
		sha256    TEXT NOT NULL,
		mime      TEXT NOT NULL,
		PRIMARY KEY (connector, sha256)
	) WITHOUT ROWID`,
}

// eventLog is the per-chat log of delivered events.
type eventLog struct {
	store     *bridge.Store
	connector string
	history   int64
	// kept counts each chat's logged events, from a COUNT the first time
	// a chat is appended to. Only the store's writer goroutine touches it
	// (appendTx runs there). A write op that runs twice can leave it a
	// little high, which only makes a trim come early.
	kept map[string]int64
	// last is the key each chat's newest append was tried for, with
	// Store.FailedWrites at the time; writer goroutine only, like kept.
	last map[string]lastAppend
}

type lastAppend struct {
	key    string
	failed uint64
}

// errEarlierMissing refuses an event while the one sent before it to its
// chat is not logged: the core sends that one again first (its record is
// refused too), so the chat's log keeps the order events were sent in.
var errEarlierMissing = errors.New("an earlier event of this chat is not logged yet; it goes first")

// appendResult is what one append did; the write fn may run twice (the
// store retries a failed batch op by op), so it is reset on every run.
type appendResult struct {
	seq      int64
	inserted bool
}

// trimEvery spaces out trimming: deleting on every append would double the
// write cost, while a few hundred extra rows cost nothing.
func (l *eventLog) trimEvery() int64 {
	return min(max(l.history/8, 1), 256)
}

// appendTx inserts one event unless its key is already logged (a
// redelivery, which must be neither stored nor broadcast twice). The seq
// is the row id: the store has one writer, so seqs rise in commit order,
// and they survive restarts.
func (l *eventLog) appendTx(tx *bridge.Tx, chat, key, after string, payload []byte, media []storedMedia, res *appendResult) error {
	*res = appendResult{}
	failed := l.store.FailedWrites()
	// after's append ran just before this one with no write failed since:
	// it is committed, or in this transaction. Otherwise it may have
	// failed (or never run), and then a new event must wait for it.
	if prev := l.last[chat]; after != "" && after != key && (prev.key != after || prev.failed != failed) {
		afterLogged, err := l.logged(tx, after)
		if err != nil {
			return err
		}
		if !afterLogged {
			if logged, err := l.logged(tx, key); err != nil || logged {
				return err // a repeat of a logged event needs nothing
			}
			return errEarlierMissing
		}
	}
	// Noted before the insert, which may be what fails.
	l.last[chat] = lastAppend{key, failed}
	r, err := tx.Exec(`INSERT OR IGNORE INTO api_events (connector, chat, key, payload, created_at) VALUES (?, ?, ?, ?, ?)`,
		l.connector, chat, key, string(payload), time.Now().UnixMilli())
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil || n == 0 {
		return err
	}
	seq, err := r.LastInsertId()
	if err != nil {
		return err
	}
	for _, m := range media {
		if _, err := tx.Exec(`INSERT INTO api_media (connector, sha256, mime) VALUES (?, ?, ?)
			ON CONFLICT (connector, sha256) DO UPDATE SET mime = excluded.mime`, l.connector, m.digest, m.mime); err != nil {
			return err
		}
	}
	kept, ok := l.kept[chat]
	if !ok {
		if err := tx.QueryRow(`SELECT COUNT(*) FROM api_events WHERE connector = ? AND chat = ?`, l.connector, chat).Scan(&kept); err != nil {
			return err
		}
	} else {
		kept++
	}
	if over := kept - l.history; over >= l.trimEvery() {
		if err := l.trimTx(tx, chat, over); err != nil {
			return err
		}
		kept -= over
	}
	l.kept[chat] = kept
	res.seq, res.inserted = seq, true
	return nil
}

// logged reports whether key is in the log.
func (l *eventLog) logged(tx *bridge.Tx, key string) (bool, error) {
	var one int
	err := tx.QueryRow(`SELECT 1 FROM api_events WHERE key = ?`, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// trimTx deletes a chat's oldest n events and records how far it deleted.
// It reads only the rows it deletes, from the old end of the chat's index.
func (l *eventLog) trimTx(tx *bridge.Tx, chat string, n int64) error {
	var cut int64
	err := tx.QueryRow(`SELECT seq FROM api_events WHERE connector = ? AND chat = ? ORDER BY seq LIMIT 1 OFFSET ?`,
		l.connector, chat, n-1).Scan(&cut)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(`DELETE FROM api_events WHERE connector = ? AND chat = ? AND seq <= ?`, l.connector, chat, cut); err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO api_chats (connector, chat, trimmed_through) VALUES (?, ?, ?)
		ON CONFLICT (connector, chat) DO UPDATE SET trimmed_through = excluded.trimmed_through`, l.connector, chat, cut)
	return err
}

// replayFloor is the seq below which a chat's events are not replayed:
// events beyond the newest history (trimmed, or about to be) are cut, so
// what a client gets does not depend on when trimming last ran. 0 when
// nothing has been cut.
func (l *eventLog) replayFloor(ctx context.Context, chat string) (int64, error) {
	var beyond, trimmed sql.NullInt64
	err := l.store.QueryRowContext(ctx, `SELECT seq FROM api_events WHERE connector = ? AND chat = ? ORDER BY seq DESC LIMIT 1 OFFSET ?`,
		l.connector, chat, l.history).Scan(&beyond)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	err = l.store.QueryRowContext(ctx, `SELECT trimmed_through FROM api_chats WHERE connector = ? AND chat = ?`,
		l.connector, chat).Scan(&trimmed)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	return max(beyond.Int64, trimmed.Int64), nil
}

// latest is the chat's highest seq, 0 for an empty log.
func (l *eventLog) latest(ctx context.Context, chat string) (int64, error) {
	var seq int64
	err := l.store.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM api_events WHERE connector = ? AND chat = ?`,
		l.connector, chat).Scan(&seq)
	return seq, err
}

type loggedEvent struct {
	seq     int64
	payload []byte
}

// page returns up to n events with after < seq <= upto, in order. Callers
// page so a slow client never holds a read connection open.
func (l *eventLog) page(ctx context.Context, chat string, after, upto int64, n int) ([]loggedEvent, error) {
	rows, err := l.store.QueryContext(ctx, `SELECT seq, payload FROM api_events
		WHERE connector = ? AND chat = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
		l.connector, chat, after, upto, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []loggedEvent
	for rows.Next() {
		var e loggedEvent
		var p string
		if err := rows.Scan(&e.seq, &p); err != nil {
			return nil, err
		}
		e.payload = []byte(p)
		out = append(out, e)
	}
	return out, rows.Err()
}

// mediaType is the MIME type recorded for a stored attachment, or "".
func (l *eventLog) mediaType(ctx context.Context, digest string) string {
	var mime string
	l.store.QueryRowContext(ctx, `SELECT mime FROM api_media WHERE connector = ? AND sha256 = ?`,
		l.connector, digest).Scan(&mime)
	return mime
}
