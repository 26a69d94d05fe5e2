package irc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// IRC has no message ids, so a resent line cannot be recognised: the
// connector itself records, per delivery key, how many of an event's
// lines the server confirmed, and commits that before Send returns. A
// retry after a partial failure, or a redelivery after a crash or after
// the core could not record the delivery, sends only the rest.

var migrations = []string{
	`CREATE TABLE IF NOT EXISTS irc_sent (
		connector TEXT NOT NULL,
		key       TEXT NOT NULL, -- Outgoing.Key
		lines     INTEGER NOT NULL, -- lines the server confirmed
		total     INTEGER NOT NULL, -- lines the event became
		at        INTEGER NOT NULL, -- unix ms of the last update
		PRIMARY KEY (connector, key)
	) WITHOUT ROWID`,
}

// Rows of finished events matter only until the core has recorded the
// delivery (seconds, unless the process dies first); unfinished ones until
// the core stops retrying (delivery.give_up_after, 72h by default).
const (
	keepFinished   = 10 * time.Minute
	keepUnfinished = 30 * 24 * time.Hour
	pruneEvery     = 4096 // writes between prunes
)

type progress struct {
	store     *bridge.Store
	connector string
	log       *slog.Logger

	mu sync.Mutex
	// partial holds the lines of events that failed part way, as they
	// were rendered, so a retry resumes with exactly the same lines.
	partial map[string]*partialSend
	// unrecorded holds confirmed counts whose record could not be
	// written (the disk refused it), so a retry in this run skips them.
	unrecorded map[string]int
	writes     int
}

type partialSend struct {
	lines []*ircmsg.Message
	sent  int
}

func newProgress(store *bridge.Store, connector string, log *slog.Logger) *progress {
	return &progress{store: store, connector: connector, log: log, partial: map[string]*partialSend{}, unrecorded: map[string]int{}}
}

// load migrates the table.
func (p *progress) load(ctx context.Context) error {
	return p.store.Migrate(ctx, "irc", migrations)
}

// resume returns the lines to send for key: the ones kept from a failed
// attempt, else render's, and how many of them were confirmed already.
// Only a delivery the core says may have gone out (after a crash, or
// when the core could not record it) is looked up in the table.
func (p *progress) resume(ctx context.Context, key string, maybeSent bool, render func() ([]*ircmsg.Message, error)) ([]*ircmsg.Message, int, error) {
	p.mu.Lock()
	ps := p.partial[key]
	n, ok := p.unrecorded[key]
	p.mu.Unlock()
	if ps != nil {
		return ps.lines, ps.sent, nil
	}
	lines, err := render()
	if err != nil {
		return nil, 0, err
	}
	if !ok && maybeSent {
		err := p.store.QueryRowContext(ctx, `SELECT lines FROM irc_sent WHERE connector = ? AND key = ?`, p.connector, key).Scan(&n)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, 0, fmt.Errorf("read which IRC lines were sent: %w", err)
		}
	}
	return lines, min(n, len(lines)), nil
}

// failed keeps lines for the retry (rendering again could publish the
// attachments again, or split differently after a change of host), and
// records the n confirmed when some were confirmed in this attempt.
func (p *progress) failed(ctx context.Context, key string, lines []*ircmsg.Message, n int, progressed bool) {
	if progressed {
		p.confirmed(ctx, key, lines, n)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.partial[key] == nil {
		p.partial[key] = &partialSend{lines: lines, sent: n}
	}
}

// confirmed records that the server has the first n of lines, and returns
// once the record is committed: a crash can then repeat only the message
// in flight, never the several whose records were still queued. If the
// record cannot be written, the count stays in memory, so a retry in this
// run still skips what the server has.
func (p *progress) confirmed(ctx context.Context, key string, lines []*ircmsg.Message, n int) {
	p.mu.Lock()
	total := len(lines)
	if n < total {
		if ps := p.partial[key]; ps != nil {
			ps.sent = n
		} else {
			p.partial[key] = &partialSend{lines: lines, sent: n}
		}
	} else {
		delete(p.partial, key)
		delete(p.unrecorded, key)
	}
	p.writes++
	prune := p.writes%pruneEvery == 0
	p.mu.Unlock()
	now := time.Now()
	connector := p.connector
	err := p.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO irc_sent (connector, key, lines, total, at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (connector, key) DO UPDATE SET lines = excluded.lines, total = excluded.total, at = excluded.at`,
			connector, key, n, total, now.UnixMilli())
		if err != nil || !prune {
			return err
		}
		_, err = tx.Exec(`DELETE FROM irc_sent WHERE connector = ? AND ((lines >= total AND at < ?) OR at < ?)`,
			connector, now.Add(-keepFinished).UnixMilli(), now.Add(-keepUnfinished).UnixMilli())
		return err
	})
	if err != nil {
		p.log.Error("cannot record which IRC lines were sent; after a restart some may be sent twice", "err", err)
		if n == total {
			p.mu.Lock()
			p.unrecorded[key] = n
			p.mu.Unlock()
		}
	}
}
