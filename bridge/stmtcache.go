package bridge

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"
)

// A pool whose connections keep each statement they run prepared, keyed
// by its text. The store prepares its own statements, but whatsmeow's
// session store sends every statement as text, and the pure-Go SQLite
// parses it each time: 13 % of the daemon's CPU relaying WhatsApp at a
// steady rate was that parsing (issue 17). database/sql hands a
// connection to one user at a time, so a connection's cache needs no
// lock; a statement whose rows are still open is busy, and a second use
// of its text meanwhile runs uncached, as before.

// maxCachedStmts bounds one connection's cache: whatsmeow's statements
// are a fixed set, apart from a few with a list of parameters whose
// length varies; those past the bound run uncached.
const maxCachedStmts = 128

// openCachingPool is sql.Open("sqlite", dsn) with the statement cache.
func openCachingPool(dsn string) *sql.DB {
	return sql.OpenDB(cachingConnector{dsn: dsn})
}

type cachingConnector struct{ dsn string }

// sqliteDriver is the driver modernc.org/sqlite registers as "sqlite", so
// what is registered on it applies here too.
var sqliteDriver = func() driver.Driver {
	db, err := sql.Open("sqlite", "")
	if err != nil {
		panic(err) // the import above registers it
	}
	defer db.Close()
	return db.Driver()
}()

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := sqliteDriver.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return newCachingConn(conn)
}

func (cachingConnector) Driver() driver.Driver { return sqliteDriver }

// sqliteConn is what the driver's connections do and the cache relies on.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// sqliteStmt is what the driver's statements do and the cache relies on.
type sqliteStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

type cachedStmt struct {
	stmt sqliteStmt
	busy bool // rows from it are open
}

type cachingConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
}

func newCachingConn(conn driver.Conn) (*cachingConn, error) {
	c, ok := conn.(sqliteConn)
	if !ok {
		conn.Close()
		return nil, errors.New("the SQLite driver's connection lacks a method the statement cache needs; the driver changed")
	}
	return &cachingConn{sqliteConn: c, stmts: map[string]*cachedStmt{}}, nil
}

// prepared is query's cached statement, prepared now if need be; nil
// when it cannot be cached (busy, the cache full, or it does not parse:
// the uncached call then reports the error).
func (c *cachingConn) prepared(ctx context.Context, query string) *cachedStmt {
	if cs, ok := c.stmts[query]; ok {
		if cs.busy {
			return nil
		}
		return cs
	}
	if len(c.stmts) >= maxCachedStmts {
		return nil
	}
	st, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	stmt, ok := st.(sqliteStmt)
	if !ok {
		st.Close()
		return nil
	}
	cs := &cachedStmt{stmt: stmt}
	c.stmts[query] = cs
	return cs
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs := c.prepared(ctx, query)
	if cs == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return cs.stmt.ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs := c.prepared(ctx, query)
	if cs == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := cs.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	cs.busy = true
	return &cachedRows{Rows: rows, stmt: cs}, nil
}

func (c *cachingConn) Close() error {
	for query, cs := range c.stmts {
		cs.stmt.Close()
		delete(c.stmts, query)
	}
	return c.sqliteConn.Close()
}

// cachedRows frees its statement for the next use when closed, and
// passes on the column details the driver's rows give.
type cachedRows struct {
	driver.Rows
	stmt *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.stmt.busy = false
	return err
}

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *cachedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
