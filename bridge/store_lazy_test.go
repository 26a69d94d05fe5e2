package bridge_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// TestLazyWritesShareTheNextCommit: a lazy write (a delivery's record, a
// /sync position) waits for the next write and commits with it, in queue
// order; alone, it commits within a second; at Close it is not lost.
func TestLazyWritesShareTheNextCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "phonebridge.db")
	st, err := bridge.OpenStore(path, "normal")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	insert := func(k string) func(tx *bridge.Tx) error {
		return func(tx *bridge.Tx) error {
			_, err := tx.Exec(`INSERT INTO t VALUES (?)`, k)
			return err
		}
	}
	if err := st.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	order := make(chan string, 4)
	st.WriteLazy(insert("lazy"), func(err error) {
		if err != nil {
			t.Errorf("lazy write: %v", err)
		}
		order <- "lazy"
	})
	select {
	case <-order:
		t.Fatal("a lazy write committed at once, alone")
	case <-time.After(100 * time.Millisecond):
	}
	if err := st.Write(ctx, insert("next")); err != nil {
		t.Fatal(err)
	}
	order <- "next"
	if first, second := <-order, <-order; first != "lazy" || second != "next" {
		t.Fatalf("callbacks ran %s, %s; want the lazy write's first, before the write that carried it returned", first, second)
	}

	alone := make(chan error, 1)
	st.WriteLazy(insert("alone"), func(err error) { alone <- err })
	select {
	case err := <-alone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lazy write with no company did not commit within 5 s")
	}

	st.WriteLazy(insert("at-close"), func(error) {})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = bridge.OpenStore(path, "normal")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var n int
	if err := st.DB().QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("%d rows after Close, want 4: a lazy write held at Close was lost", n)
	}
}
