package api

import (
	"context"
	"database/sql"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// migrations are the api component's schema steps (Store.Migrate). IF NOT
// EXISTS because several api connectors share the tables and may migrate
// at the same moment.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS api_events (
		connector  TEXT    NOT NULL,
		chat       TEXT    NOT NULL,
		seq        INTEGER NOT NULL, -- per (connector, chat), from 1, no gaps
		key        TEXT    NOT NULL, -- Outgoing.Key: the event's id on the wire
		payload    TEXT    NOT NULL, -- the event's JSON as clients receive it
		created_at INTEGER NOT NULL, -- unix milliseconds
		PRIMARY KEY (connector, chat, seq),
		UNIQUE (connector, chat, key)
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
}

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

// appendTx inserts one event unless its key is already logged. The seq is
// max+1 inside the transaction: the store has one writer, so seqs are
// gapless and rise in commit order, and they survive restarts.
func (l *eventLog) appendTx(tx *sql.Tx, chat, key string, payload []byte, media []storedMedia, res *appendResult) error {
	*res = appendResult{}
	var seq int64
	if err := tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) + 1 FROM api_events WHERE connector = ? AND chat = ?`,
		l.connector, chat).Scan(&seq); err != nil {
		return err
	}
	r, err := tx.Exec(`INSERT OR IGNORE INTO api_events (connector, chat, seq, key, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		l.connector, chat, seq, key, string(payload), time.Now().UnixMilli())
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil || n == 0 {
		return err // a redelivery: already logged and broadcast
	}
	for _, m := range media {
		if _, err := tx.Exec(`INSERT INTO api_media (connector, sha256, mime) VALUES (?, ?, ?)
			ON CONFLICT (connector, sha256) DO UPDATE SET mime = excluded.mime`, l.connector, m.digest, m.mime); err != nil {
			return err
		}
	}
	if seq%l.trimEvery() == 0 && seq > l.history {
		if _, err := tx.Exec(`DELETE FROM api_events WHERE connector = ? AND chat = ? AND seq <= ?`,
			l.connector, chat, seq-l.history); err != nil {
			return err
		}
	}
	res.seq, res.inserted = seq, true
	return nil
}

// latest is the chat's highest seq, 0 for an empty log.
func (l *eventLog) latest(ctx context.Context, chat string) (int64, error) {
	var seq int64
	err := l.store.DB().QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM api_events WHERE connector = ? AND chat = ?`,
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
	rows, err := l.store.DB().QueryContext(ctx, `SELECT seq, payload FROM api_events
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
	l.store.DB().QueryRowContext(ctx, `SELECT mime FROM api_media WHERE connector = ? AND sha256 = ?`,
		l.connector, digest).Scan(&mime)
	return mime
}
