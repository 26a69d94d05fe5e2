package bridge

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// onePoolConn is a pool of one connection on a fresh store, with a table
// t holding ('a', 1) and ('b', 2).
func onePoolConn(t testing.TB) *sql.DB {
	_, db := storeAndPoolConn(t)
	return db
}

// storeAndPoolConn is onePoolConn and its store.
func storeAndPoolConn(t testing.TB) (*Store, *sql.DB) {
	t.Helper()
	st, err := OpenStore(filepath.Join(t.TempDir(), "phonebridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db := st.OpenPool(1)
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER, b BLOB)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO t (k, v) VALUES ('a', 1), ('b', 2)`); err != nil {
		t.Fatal(err)
	}
	return st, db
}

// cached is the connection's cached statement for query, or nil.
func cached(t *testing.T, db *sql.DB, query string) *cachedStmt {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var cs *cachedStmt
	if err := conn.Raw(func(dc any) error {
		c, ok := dc.(*cachingConn)
		if !ok {
			return fmt.Errorf("the pool's connection is a %T, without the statement cache", dc)
		}
		cs = c.stmts[query]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestPoolKeepsStatementsPrepared: a statement run twice on a pool's
// connection is parsed once, whether it was a query or not.
func TestPoolKeepsStatementsPrepared(t *testing.T) {
	db := onePoolConn(t)
	const query = `SELECT v FROM t WHERE k = ?`
	for i, k := range []string{"a", "b"} {
		var v int
		if err := db.QueryRow(query, k).Scan(&v); err != nil || v != i+1 {
			t.Fatalf("%s: got %d, %v; want %d", k, v, err, i+1)
		}
	}
	first := cached(t, db, query)
	if first == nil {
		t.Fatal("the query was not kept prepared")
	}
	var v int
	if err := db.QueryRow(query, "a").Scan(&v); err != nil || v != 1 {
		t.Fatalf("got %d, %v; want 1", v, err)
	}
	if again := cached(t, db, query); again != first {
		t.Fatal("the query was prepared again")
	}
	const update = `UPDATE t SET v = v + 1 WHERE k = ?`
	for range 2 {
		if _, err := db.Exec(update, "b"); err != nil {
			t.Fatal(err)
		}
	}
	if cached(t, db, update) == nil {
		t.Fatal("the update was not kept prepared")
	}
	if err := db.QueryRow(query, "b").Scan(&v); err != nil || v != 4 {
		t.Fatalf("after two updates: got %d, %v; want 4", v, err)
	}
}

// TestCachedQueryHoldsNoSnapshot: a statement kept prepared is reset after
// each use, so it holds no read transaction: the next use sees what the
// store's writer committed meanwhile, and a checkpoint can copy it all.
func TestCachedQueryHoldsNoSnapshot(t *testing.T) {
	st, db := storeAndPoolConn(t)
	const query = `SELECT v FROM t WHERE k = 'a'`
	for want := 1; want <= 3; want++ {
		var v int
		if err := db.QueryRow(query).Scan(&v); err != nil || v != want {
			t.Fatalf("got %d, %v; want %d", v, err, want)
		}
		if err := st.Write(context.Background(), func(tx *Tx) error {
			_, err := tx.Exec(`UPDATE t SET v = v + 1 WHERE k = 'a'`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	var busy, logFrames, copied int
	if err := db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &copied); err != nil || busy != 0 {
		t.Fatalf("checkpoint: busy %d, %v: a reader holds a snapshot", busy, err)
	}
}

// TestCachedStatementsAnswerAsBefore: what the cache must not change.
func TestCachedStatementsAnswerAsBefore(t *testing.T) {
	db := onePoolConn(t)
	ctx := context.Background()
	const all = `SELECT k, v FROM t ORDER BY k`

	t.Run("the same query inside its own rows", func(t *testing.T) {
		// One connection: the inner query runs while the outer's rows are
		// open on the same statement text.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		outer, err := tx.Query(all)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for outer.Next() {
			var k string
			var v int
			if err := outer.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			inner, err := tx.Query(all)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for inner.Next() {
				n++
			}
			if err := inner.Close(); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%s%d/%d", k, v, n))
		}
		if err := outer.Err(); err != nil {
			t.Fatal(err)
		}
		outer.Close()
		if strings.Join(got, " ") != "a1/2 b2/2" {
			t.Fatalf("got %q, want a1/2 b2/2", got)
		}
	})

	t.Run("a rolled-back write", func(t *testing.T) {
		for range 2 {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(`INSERT INTO t (k, v) VALUES (?, ?)`, "c", 3); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("got %d rows, %v; want 2", n, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for range 2 {
			if _, err := db.Exec(`SELEKT 1`); err == nil || !strings.Contains(err.Error(), "syntax error") {
				t.Fatalf("a statement that does not parse: got %v", err)
			}
			if _, err := db.Exec(`INSERT INTO t (k, v) VALUES (?, ?)`, "a", 9); err == nil || !strings.Contains(err.Error(), "UNIQUE") {
				t.Fatalf("a duplicate key: got %v", err)
			}
		}
	})

	t.Run("the schema changes", func(t *testing.T) {
		const star = `SELECT * FROM t WHERE k = 'a'`
		cols := func() []string {
			rows, err := db.Query(star)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			c, err := rows.Columns()
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		if c := cols(); len(c) != 3 {
			t.Fatalf("columns %q, want 3", c)
		}
		if _, err := db.Exec(`ALTER TABLE t ADD COLUMN extra TEXT`); err != nil {
			t.Fatal(err)
		}
		if c := cols(); len(c) != 4 || c[3] != "extra" {
			t.Fatalf("after the new column: %q", c)
		}
	})

	t.Run("values and column types", func(t *testing.T) {
		blob := []byte{0, 1, 2, 255}
		if _, err := db.Exec(`UPDATE t SET b = ? WHERE k = ?`, blob, "b"); err != nil {
			t.Fatal(err)
		}
		rows, err := db.Query(`SELECT v, b FROM t ORDER BY k`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		types, err := rows.ColumnTypes()
		if err != nil || types[0].DatabaseTypeName() != "INTEGER" || types[1].DatabaseTypeName() != "BLOB" {
			t.Fatalf("column types %v, %v", types, err)
		}
		var got []string
		for rows.Next() {
			var v int
			var b []byte
			if err := rows.Scan(&v, &b); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d:%x", v, b))
		}
		if strings.Join(got, " ") != "1: 2:000102ff" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("more statements than the cache keeps", func(t *testing.T) {
		for i := range maxCachedStmts + 10 {
			var n int
			if err := db.QueryRow(fmt.Sprintf(`SELECT v + %d FROM t WHERE k = 'a'`, i)).Scan(&n); err != nil || n != i+1 {
				t.Fatalf("statement %d: got %d, %v", i, n, err)
			}
		}
	})
}

// BenchmarkPoolStatement is one of whatsmeow's reads during decryption,
// through the pool (cached) and through a plain sql.Open (parsed each time).
func BenchmarkPoolStatement(b *testing.B) {
	const query = `SELECT v FROM t WHERE k = ? AND v IS NOT NULL`
	run := func(b *testing.B, db *sql.DB) {
		for b.Loop() {
			var v int
			if err := db.QueryRow(query, "a").Scan(&v); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("cached", func(b *testing.B) { run(b, onePoolConn(b)) })
	b.Run("parsed", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "plain.db")
		db, err := sql.Open("sqlite", dsnFor(path, "normal")())
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		if _, err := db.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER, b BLOB); INSERT INTO t (k, v) VALUES ('a', 1)`); err != nil {
			b.Fatal(err)
		}
		run(b, db)
	})
}
