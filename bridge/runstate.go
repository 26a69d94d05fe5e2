package bridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// markRunning records that a bridge runs on the store and reports whether
// the last run ended without Stop (a crash, SIGKILL). After such an end,
// outbox rows up to maybeSentBelow may have been delivered without the
// delivery being recorded (flushEvery); their Outgoing says MaybeSent.
func markRunning(ctx context.Context, store *Store) (unclean bool, maybeSentBelow int64, err error) {
	var state string
	err = store.QueryRowContext(ctx, `SELECT value FROM core_state WHERE key = 'run'`).Scan(&state)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return false, 0, fmt.Errorf("read the run state: %w", err)
	default:
		unclean = state == "running"
	}
	if unclean {
		var max sql.NullInt64
		if err := store.QueryRowContext(ctx, `SELECT MAX(id) FROM outbox`).Scan(&max); err != nil {
			return false, 0, fmt.Errorf("read the outbox: %w", err)
		}
		maybeSentBelow = max.Int64
	}
	err = store.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO core_state (key, value) VALUES ('run', 'running') ON CONFLICT (key) DO UPDATE SET value = excluded.value`)
		return err
	})
	if err != nil {
		return false, 0, fmt.Errorf("record the run state: %w", err)
	}
	return unclean, maybeSentBelow, nil
}

// markStopped records a clean stop: every delivery made was recorded.
func markStopped(ctx context.Context, store *Store) error {
	return store.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE core_state SET value = 'stopped' WHERE key = 'run'`)
		return err
	})
}
