package bridge_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// openPoolStore is a store with a table t, and a pool on it as whatsmeow
// gets one.
func openPoolStore(t *testing.T) (*bridge.Store, *sql.DB) {
	t.Helper()
	st, err := bridge.OpenStore(filepath.Join(t.TempDir(), "phonebridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db := st.OpenPool(2)
	t.Cleanup(func() { db.Close() })
	if err := st.Write(context.Background(), func(tx *bridge.Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO t VALUES ('a', 1)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return st, db
}

// TestPoolTransactionReadThenWriteAfterStoreCommit is whatsmeow's
// decryption transaction (it reads the session, then saves the identity)
// while the store's writer commits an event: the transaction must not
// fail with SQLITE_BUSY, and the store's write must not be lost either.
func TestPoolTransactionReadThenWriteAfterStoreCommit(t *testing.T) {
	st, pool := openPoolStore(t)
	tx, err := pool.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRow(`SELECT v FROM t WHERE k = 'a'`).Scan(&v); err != nil {
		t.Fatal(err)
	}

	// The store's writer commits meanwhile, if SQLite lets it: with the
	// pool's transaction holding the write lock, it waits for its commit.
	committed := make(chan error, 1)
	st.WriteAsync(func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO t VALUES ('event', 1)`)
		return err
	}, func(err error) { committed <- err })
	select {
	case err := <-committed:
		t.Logf("the store's write committed during the pool's transaction (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}

	if _, err := tx.Exec(`UPDATE t SET v = ? WHERE k = 'a'`, v+1); err != nil {
		t.Fatalf("the pool's transaction cannot write after reading: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("the pool's transaction cannot commit: %v", err)
	}
	select {
	case err := <-committed:
		if err != nil {
			t.Fatalf("the store's write failed: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the store's write did not commit after the pool's transaction")
	}
	var n int
	if err := st.QueryRow(`SELECT (SELECT v FROM t WHERE k = 'a') * 10 + (SELECT COUNT(*) FROM t WHERE k = 'event')`).Scan(&n); err != nil || n != 21 {
		t.Errorf("after both: v*10+events = %d (%v), want 21: both writes kept", n, err)
	}
}

// TestPoolWaitsForTheStoresWriter: while the store's writer holds the
// write lock, the pool's transactions and single statements (whatsmeow
// runs both) wait for it rather than fail.
func TestPoolWaitsForTheStoresWriter(t *testing.T) {
	st, pool := openPoolStore(t)
	holding, release := make(chan struct{}), make(chan struct{})
	writeDone := make(chan error, 1)
	st.WriteAsync(func(tx *bridge.Tx) error {
		if _, err := tx.Exec(`UPDATE t SET v = v + 1 WHERE k = 'a'`); err != nil {
			return err
		}
		close(holding)
		<-release
		return nil
	}, func(err error) { writeDone <- err })
	<-holding
	time.AfterFunc(300*time.Millisecond, func() { close(release) })

	if _, err := pool.Exec(`INSERT INTO t VALUES ('single', 1)`); err != nil {
		t.Errorf("a single statement on the pool failed while the writer held the lock: %v", err)
	}
	tx, err := pool.Begin()
	if err != nil {
		t.Fatalf("a transaction on the pool could not begin: %v", err)
	}
	var v int
	if err := tx.QueryRow(`SELECT v FROM t WHERE k = 'a'`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE t SET v = ? WHERE k = 'a'`, v+1); err != nil {
		t.Fatalf("the pool's transaction cannot write: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-writeDone; err != nil {
		t.Fatalf("the store's write: %v", err)
	}
	if err := st.QueryRow(`SELECT v FROM t WHERE k = 'a'`).Scan(&v); err != nil || v != 3 {
		t.Errorf("v = %d (%v), want 3: both increments kept", v, err)
	}
}

// TestMigrateConcurrently: two processes opening a fresh database at once
// (the daemon starting while `phonebridge links` runs) both migrate it;
// both must succeed, and each step must run once.
func TestMigrateConcurrently(t *testing.T) {
	steps := []string{
		`CREATE TABLE m1 (k TEXT PRIMARY KEY)`,
		`CREATE TABLE m2 (k TEXT PRIMARY KEY); INSERT INTO m2 VALUES ('once')`,
		`CREATE INDEX m1_k ON m1 (k)`,
	}
	const rounds, stores = 30, 3
	for round := range rounds {
		path := filepath.Join(t.TempDir(), "phonebridge.db")
		var opened []*bridge.Store
		for range stores {
			st, err := bridge.OpenStore(path, "normal")
			if err != nil {
				t.Fatal(err)
			}
			opened = append(opened, st)
		}
		errs := make(chan error, stores)
		start := make(chan struct{})
		for _, st := range opened {
			go func() {
				<-start
				errs <- st.Migrate(context.Background(), "comp", steps)
			}()
		}
		close(start)
		for range stores {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: a concurrent migration failed: %v", round, err)
			}
		}
		var n, version int
		if err := opened[0].QueryRow(`SELECT (SELECT COUNT(*) FROM m2), (SELECT version FROM schema_versions WHERE component = 'comp')`).Scan(&n, &version); err != nil || n != 1 || version != len(steps) {
			t.Fatalf("round %d: %d rows from the step that inserts one, version %d (%v); want 1 and %d", round, n, version, err, len(steps))
		}
		for _, st := range opened {
			st.Close()
		}
	}
}

// TestSharedPoolIsOnePerStore: every caller (each WhatsApp link) gets the
// same pool, so the links' session stores do not each hold SQLite
// connections of their own (issue 17), and Close closes it with the store.
func TestSharedPoolIsOnePerStore(t *testing.T) {
	st, err := bridge.OpenStore(filepath.Join(t.TempDir(), "phonebridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	a, b := st.SharedPool(), st.SharedPool()
	if a != b {
		t.Fatal("two callers got two pools")
	}
	if _, err := a.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(); err == nil {
		t.Fatal("the shared pool still answers after the store closed")
	}
}
