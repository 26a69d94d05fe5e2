package bridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // pure Go driver "sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Store is the bridge's SQLite database. All writes go through one writer
// goroutine that commits whatever is queued in one transaction (group
// commit): a burst of events costs one commit, a lone event is committed
// at once, and only records nobody waits for (WriteLazy) wait, briefly,
// to share a later commit.
type Store struct {
	path   string
	dsn    func(extra ...string) string
	writer *sql.DB // exactly one connection: SQLite has one writer anyway
	reader *sql.DB // read-only connections; WAL lets them run beside the writer
	// checkpointer copies the WAL into the database on its own connection.
	// SQLite's automatic checkpoint would run inside a commit, fsync and
	// all, and hold up every event behind it for milliseconds.
	checkpointer *sql.DB
	checkpoint   chan struct{} // capacity 1: "the WAL has grown"
	sinceCkpt    int           // writes since the last signal; writer goroutine only
	// shared is SharedPool's pool, made on first use.
	sharedMu sync.Mutex
	shared   *sql.DB

	// Prepared statements. SQLite spends longer parsing these small
	// statements than running them, so each query is prepared once.
	// writeStmts is touched only by the writer goroutine; readStmts by anyone.
	writeStmts map[string]*sql.Stmt
	toPrepare  []string
	readStmts  sync.Map // query → *sql.Stmt

	ops      chan writeOp
	closing  chan struct{}
	finished chan struct{}
	// dones carries each committed batch's callbacks to their own
	// goroutine, so the writer starts the next transaction at once.
	dones   chan []doneCall
	closeMu sync.RWMutex // held for reading while queuing, for writing by Close
	closed  bool

	// failed counts write ops that failed (FailedWrites).
	failed atomic.Uint64
	// log gets the one line that says the disk refuses writes, and the
	// one that says it takes them again; nil logs nothing.
	log atomic.Pointer[slog.Logger]
	// refusing is true while the disk refuses writes; writer goroutine only.
	refusing bool
}

type writeOp struct {
	fn   func(tx *Tx) error
	done func(error)
	// lazy ops may wait up to lazyWait for another write to share their
	// commit (WriteLazy).
	lazy bool
}

type doneCall struct {
	done func(error)
	err  error
}

// Tx is a write transaction. Its Exec, Query and QueryRow run through
// prepared statements the store keeps across transactions.
type Tx struct {
	*sql.Tx
	s *Store
	// bound holds statements already bound to this transaction: a group
	// commit runs the same few statements hundreds of times.
	bound map[string]*sql.Stmt
}

// maxPrepared bounds the statement cache: queries are meant to be
// constants, and a caller building them dynamically must not grow it
// without end.
const maxPrepared = 256

func (t *Tx) stmt(query string) *sql.Stmt {
	if st, ok := t.bound[query]; ok {
		return st
	}
	if st, ok := t.s.writeStmts[query]; ok {
		bound := t.Tx.Stmt(st)
		t.bound[query] = bound
		return bound
	}
	// Preparing needs the writer's one connection, which this transaction
	// holds: note the query and prepare it once the transaction is over.
	if len(t.s.writeStmts)+len(t.s.toPrepare) < maxPrepared {
		t.s.toPrepare = append(t.s.toPrepare, query)
	}
	return nil
}

// Exec runs a statement in the transaction.
func (t *Tx) Exec(query string, args ...any) (sql.Result, error) {
	if st := t.stmt(query); st != nil {
		return st.Exec(args...)
	}
	return t.Tx.Exec(query, args...)
}

// QueryRow runs a query expected to return at most one row.
func (t *Tx) QueryRow(query string, args ...any) *sql.Row {
	if st := t.stmt(query); st != nil {
		return st.QueryRow(args...)
	}
	return t.Tx.QueryRow(query, args...)
}

// Query runs a query in the transaction.
func (t *Tx) Query(query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(query); st != nil {
		return st.Query(args...)
	}
	return t.Tx.Query(query, args...)
}

// maxBatch bounds one group commit so a flood cannot build a transaction
// large enough to stall readers' view of the WAL for long.
const maxBatch = 512

// ErrStoreClosed is returned for writes submitted after Close.
var ErrStoreClosed = errors.New("store is closed")

// ErrCannotWrite is what a write fails with (errors.Is) when the disk
// refused it: full, over a file size limit, or failing. Nothing of it was
// committed; the same write succeeds once the disk takes writes again.
var ErrCannotWrite = errors.New("the store cannot write")

// cannotWriteError is a write the disk refused, with the remedy.
type cannotWriteError struct {
	dir string
	err error
}

func (e *cannotWriteError) Error() string {
	return fmt.Sprintf("%v (disk full, a file size limit, or a failing disk): free space in %s, then send again: %v", ErrCannotWrite, e.dir, e.err)
}

func (e *cannotWriteError) Is(target error) bool { return target == ErrCannotWrite }
func (e *cannotWriteError) Unwrap() error        { return e.err }

// classify marks err as ErrCannotWrite when SQLite says the disk refused
// the write: SQLITE_FULL for ENOSPC, SQLITE_IOERR for the rest (EFBIG
// past RLIMIT_FSIZE is SQLITE_IOERR_WRITE).
func (s *Store) classify(err error) error {
	var se *sqlite.Error
	if err == nil || errors.Is(err, ErrCannotWrite) || !errors.As(err, &se) {
		return err
	}
	if c := se.Code() & 0xff; c == sqlite3.SQLITE_FULL || c == sqlite3.SQLITE_IOERR {
		return &cannotWriteError{dir: filepath.Dir(s.path), err: err}
	}
	return err
}

// OpenStore opens (creating, mode 0600) the database at path. sync is
// "normal" or "full" (SQLite's synchronous pragma in WAL mode).
func OpenStore(path, sync string) (*Store, error) {
	if sync == "" {
		sync = "normal"
	}
	if sync != "normal" && sync != "full" {
		return nil, fmt.Errorf("store sync %q is not normal or full", sync)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create the database's directory: %w", err)
	}
	// Create the file ourselves so it is 0600 from the first byte; SQLite
	// gives its -wal and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("restrict database %s to its owner: %w", path, err)
	}

	dsn := dsnFor(path, sync)
	writer, err := sql.Open("sqlite", dsn("wal_autocheckpoint(0)")+"&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	if err := writer.Ping(); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// Readers keep a small page cache (the default is 2 MB each): in WAL
	// mode a read transaction after any other connection's commit starts
	// with its cache emptied, so under load a larger one holds nothing
	// useful, and idle it holds memory (issue 17).
	reader, err := sql.Open("sqlite", dsn("query_only(1)", "cache_size(-512)"))
	if err != nil {
		writer.Close()
		return nil, err
	}
	reader.SetMaxOpenConns(4)
	reader.SetMaxIdleConns(4)
	reader.SetConnMaxLifetime(0)
	// A checkpoint copies WAL frames to the database without the page
	// cache: the smallest one will do.
	checkpointer, err := sql.Open("sqlite", dsn("cache_size(-64)"))
	if err != nil {
		writer.Close()
		reader.Close()
		return nil, err
	}
	checkpointer.SetMaxOpenConns(1)

	s := &Store{
		dsn:          dsn,
		writeStmts:   map[string]*sql.Stmt{},
		path:         path,
		writer:       writer,
		reader:       reader,
		checkpointer: checkpointer,
		checkpoint:   make(chan struct{}, 1),
		ops:          make(chan writeOp, 4096),
		dones:        make(chan []doneCall, 64),
		closing:      make(chan struct{}),
		finished:     make(chan struct{}),
	}
	if _, err := writer.Exec(`CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)`); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("initialise database %s: %w", path, err)
	}
	go s.writeLoop()
	go s.doneLoop()
	go s.checkpointLoop()
	return s, nil
}

// dsnFor is the driver address for the database at path, with the
// pragmas every connection needs and extra ones.
func dsnFor(path, sync string) func(extra ...string) string {
	return func(extra ...string) string {
		q := url.Values{}
		for _, p := range append([]string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(" + sync + ")", "foreign_keys(1)"}, extra...) {
			q.Add("_pragma", p)
		}
		return "file:" + path + "?" + q.Encode()
	}
}

// OpenPool opens another pool of connections to the database, for a
// library that needs its own *sql.DB (whatsmeow's session store). Its
// writes take turns with the store's through SQLite's own lock; the
// caller closes it.
//
// Its transactions take the write lock at BEGIN (IMMEDIATE), waiting
// busy_timeout for it. A deferred one that read first and then writes
// fails at once with SQLITE_BUSY if the store's writer committed in
// between (in WAL mode busy_timeout cannot help a stale read snapshot):
// whatsmeow then loses the message it was decrypting. Statements outside
// a transaction take the lock as they start, so busy_timeout covers them.
// Read-only transactions (sql.TxOptions.ReadOnly) stay deferred.
func (s *Store) OpenPool(maxConns int) *sql.DB {
	return s.openPool(maxConns)
}

func (s *Store) openPool(maxConns int, pragmas ...string) *sql.DB {
	db := openCachingPool(s.dsn(pragmas...) + "&_txlock=immediate")
	db.SetMaxOpenConns(maxConns)
	return db
}

// sharedPoolConns bounds SharedPool. whatsmeow's writes (a decryption
// and its buffered plaintext) take SQLite's one write lock in turn
// whatever the pool's size; the spare connections let reads go beside.
const sharedPoolConns = 4

// SharedPool is a pool like OpenPool's, one for the whole process: every
// WhatsApp link keeps its session store on it. Each SQLite connection
// holds its own parsed schema, lookaside and page cache, and the driver
// does not give that memory back when a connection closes, so a pool per
// link made each linked account cost about 500 KB (issue 17). Its
// connections keep a small page cache: a read transaction after another
// connection's commit starts with an empty cache in WAL mode anyway, and
// commits alternate here between whatsmeow and the store's writer. It is
// made on first use and closed by Close; callers must not close it.
func (s *Store) SharedPool() *sql.DB {
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	if s.shared == nil {
		db := s.openPool(sharedPoolConns, "cache_size(-512)")
		// Connections stay open once made: closing one would free nothing
		// (see above) and the next would parse the schema again.
		db.SetMaxIdleConns(sharedPoolConns)
		s.shared = db
	}
	return s.shared
}

// checkpointEvery is how many writes pass between checkpoints: often
// enough to keep the WAL to a few megabytes.
const checkpointEvery = 2048

// checkpointLoop checkpoints when the writer says the WAL has grown. A
// passive checkpoint never blocks the writer or readers; it copies what it
// can and the writer restarts the WAL once everything is copied.
func (s *Store) checkpointLoop() {
	for range s.checkpoint {
		s.checkpointer.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
	}
}

func (s *Store) noteWrites(n int) {
	s.sinceCkpt += n
	if s.sinceCkpt < checkpointEvery {
		return
	}
	s.sinceCkpt = 0
	select {
	case s.checkpoint <- struct{}{}:
	default:
	}
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// DB is for reads. It sees every committed write; use Write to write.
// QueryContext and QueryRowContext do the same with prepared statements.
func (s *Store) DB() *sql.DB { return s.reader }

func (s *Store) readStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.readStmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.reader.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.readStmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// QueryContext reads committed data through a prepared statement.
func (s *Store) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.readStmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext reads one row of committed data through a prepared
// statement.
func (s *Store) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.readStmt(ctx, query)
	if err != nil {
		return s.reader.QueryRowContext(ctx, query, args...) // reports the same error
	}
	return st.QueryRowContext(ctx, args...)
}

// QueryRow is QueryRowContext without a context.
func (s *Store) QueryRow(query string, args ...any) *sql.Row {
	return s.QueryRowContext(context.Background(), query, args...)
}

// Write runs fn in a write transaction, batched with other writes queued at
// the same time, and returns once that transaction is committed. fn may run
// more than once (when a batch fails it is retried one op at a time), so it
// must only touch the database or state it resets itself.
func (s *Store) Write(ctx context.Context, fn func(tx *Tx) error) error {
	done := make(chan error, 1)
	s.WriteAsync(fn, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ExecBatches runs query, with args and then limit as its last argument,
// in write transactions of its own until one changes fewer than limit
// rows or ctx ends: a large delete or update in steps, so the single
// writer is never held long. It returns how many rows changed.
func (s *Store) ExecBatches(ctx context.Context, limit int, query string, args ...any) (int, error) {
	args = append(args[:len(args):len(args)], limit)
	total := 0
	for ctx.Err() == nil {
		var n int64
		err := s.Write(ctx, func(tx *Tx) error {
			r, err := tx.Exec(query, args...)
			if err != nil {
				return err
			}
			n, err = r.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		total += int(n)
		if n < int64(limit) {
			break
		}
	}
	return total, nil
}

// WriteAsync queues fn like Write and returns; done gets the outcome. Done
// callbacks run one at a time, in commit order, on the store's completion
// goroutine, so they must not block. Writes queued from one goroutine
// commit in queue order.
func (s *Store) WriteAsync(fn func(tx *Tx) error, done func(error)) {
	s.enqueue(writeOp{fn: fn, done: done})
}

func (s *Store) enqueue(op writeOp) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		op.done(ErrStoreClosed)
		return
	}
	s.ops <- op
}

// WriteLazy is WriteAsync for a write nobody waits for (a record of what
// is done already, a position to resume from): it waits up to lazyWait
// for another write to commit with, so a steady trickle of messages
// costs one commit each rather than two or three. A later Write, or
// Close, commits it at once; writes still commit in queue order.
func (s *Store) WriteLazy(fn func(tx *Tx) error, done func(error)) {
	s.enqueue(writeOp{fn: fn, done: done, lazy: true})
}

// lazyWait bounds how long a lazy write waits for company: what a crash
// can leave unrecorded beyond the writes in flight, all of it redone
// safely (deliveries go again with their keys, positions are read again).
const lazyWait = 500 * time.Millisecond

func (s *Store) writeLoop() {
	defer close(s.dones)
	batch := make([]writeOp, 0, maxBatch)
	// held are lazy ops queued first, waiting (until due) for company.
	held := make([]writeOp, 0, maxBatch)
	timer := time.NewTimer(lazyWait)
	timer.Stop()
	var due <-chan time.Time
	for {
		var first writeOp
		select {
		case first = <-s.ops:
		case <-due:
			due = nil
			batch = append(batch[:0], held...)
			held = held[:0]
			s.commit(batch)
			continue
		case <-s.closing:
			// Close holds closeMu, so nothing more is queued: drain.
			if len(held) > 0 {
				s.commit(held)
			}
			for {
				select {
				case op := <-s.ops:
					s.commit(append(batch[:0], op))
				default:
					return
				}
			}
		}
		batch = append(append(batch[:0], held...), first)
		held = held[:0]
	fill:
		for len(batch) < maxBatch {
			select {
			case op := <-s.ops:
				batch = append(batch, op)
			default:
				break fill
			}
		}
		if len(batch) < maxBatch && !slices.ContainsFunc(batch, func(op writeOp) bool { return !op.lazy }) {
			held = append(held, batch...)
			if due == nil {
				timer.Reset(lazyWait)
				due = timer.C
			}
			continue
		}
		if due != nil {
			timer.Stop()
			due = nil
		}
		s.commit(batch)
	}
}

// doneLoop runs the callbacks of committed batches, in commit order.
func (s *Store) doneLoop() {
	defer close(s.finished)
	for calls := range s.dones {
		for _, c := range calls {
			c.done(c.err)
		}
	}
}

func (s *Store) commit(batch []writeOp) {
	defer s.prepareNoted()
	defer s.noteWrites(len(batch))
	calls := make([]doneCall, len(batch))
	var changes int64
	if s.refusing {
		changes = s.totalChanges()
	}
	err := s.runTx(batch)
	for i, op := range batch {
		calls[i] = doneCall{done: op.done, err: err}
	}
	switch {
	case err != nil && len(batch) > 1:
		// One op spoiled the batch: isolate it by running each on its own.
		// A failure is counted before the next op runs, so that op sees it.
		for i, op := range batch {
			if calls[i].err = s.runTx([]writeOp{op}); calls[i].err != nil {
				s.failed.Add(1)
			}
		}
	case err != nil:
		s.failed.Add(1)
	}
	s.noteRefusal(calls, changes)
	s.dones <- calls
}

// FailedWrites counts the write ops that have failed since the store
// opened. Writes queued without waiting (WriteAsync) can use it: a later
// write that sees it unchanged since the earlier one was queued knows the
// earlier one committed (the writer runs ops in queue order).
func (s *Store) FailedWrites() uint64 { return s.failed.Load() }

// setLog makes the store report when the disk starts and stops refusing
// its writes.
func (s *Store) setLog(l *slog.Logger) { s.log.Store(l) }

// totalChanges is how many rows the writer's connection has changed.
func (s *Store) totalChanges() int64 {
	var n int64
	s.writer.QueryRow(`SELECT total_changes()`).Scan(&n)
	return n
}

// noteRefusal logs once when the disk starts refusing writes and once
// when it takes them again, rather than a line per refused write. While
// refusing, a commit counts as taken only if it changed rows (changes is
// the count before it): one that changed none wrote nothing to the disk.
func (s *Store) noteRefusal(calls []doneCall, changes int64) {
	var refused error
	ok := false
	for _, c := range calls {
		switch {
		case c.err == nil:
			ok = true
		case refused == nil && errors.Is(c.err, ErrCannotWrite):
			refused = c.err
		}
	}
	log := s.log.Load()
	switch {
	case refused != nil && !s.refusing:
		s.refusing = true
		if log != nil {
			log.Error("the store cannot write: inbound events are refused and deliveries wait until it can; free space in "+filepath.Dir(s.path)+", or raise the file size limit, or check the disk", "err", errors.Unwrap(refused))
		}
	case refused == nil && ok && s.refusing && s.totalChanges() > changes:
		s.refusing = false
		if log != nil {
			log.Info("the store writes again: refused events can be sent again")
		}
	}
}

// prepareNoted prepares the queries transactions noted, now that the
// writer's connection is free. A query that fails to prepare is left to
// run unprepared, where it reports its own error.
func (s *Store) prepareNoted() {
	for _, q := range s.toPrepare {
		if _, ok := s.writeStmts[q]; ok {
			continue
		}
		if st, err := s.writer.Prepare(q); err == nil {
			s.writeStmts[q] = st
		}
	}
	s.toPrepare = s.toPrepare[:0]
}

func (s *Store) runTx(ops []writeOp) error {
	sqlTx, err := s.writer.Begin()
	if err != nil {
		return s.classify(fmt.Errorf("begin write: %w", err))
	}
	tx := &Tx{Tx: sqlTx, s: s, bound: map[string]*sql.Stmt{}}
	for _, op := range ops {
		if err := op.fn(tx); err != nil {
			tx.Rollback()
			return s.classify(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.classify(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// Migrate brings component's tables up to date: steps[i] is the SQL that
// takes the schema from version i to i+1. Each step runs in its own
// transaction with its version bump; steps already applied are skipped.
func (s *Store) Migrate(ctx context.Context, component string, steps []string) error {
	var have int
	err := s.writer.QueryRowContext(ctx, `SELECT version FROM schema_versions WHERE component = ?`, component).Scan(&have)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read schema version of %s: %w", component, err)
	}
	if have > len(steps) {
		return fmt.Errorf("the database's %s schema is version %d, newer than this phonebridge knows (%d): run a newer phonebridge or restore a backup", component, have, len(steps))
	}
	for v := have; v < len(steps); v++ {
		step := steps[v]
		err := s.Write(ctx, func(tx *Tx) error {
			// Another process on the database (a CLI command while the
			// daemon starts) may have run the step since the read above.
			// The writer's transactions hold the write lock from BEGIN, so
			// the version read here stays true until the commit.
			var now int
			err := tx.QueryRow(`SELECT version FROM schema_versions WHERE component = ?`, component).Scan(&now)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if now > v {
				return nil
			}
			if _, err := tx.Exec(step); err != nil {
				return err
			}
			_, err = tx.Exec(`INSERT INTO schema_versions (component, version) VALUES (?, ?)
				ON CONFLICT (component) DO UPDATE SET version = excluded.version`, component, v+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s schema to version %d: %w", component, v+1, err)
		}
	}
	return nil
}

// Close finishes queued writes and closes the database.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.closing)
	<-s.finished
	close(s.checkpoint)
	return s.closeDBs()
}

func (s *Store) closeDBs() error {
	for _, st := range s.writeStmts {
		st.Close()
	}
	s.readStmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	// Checkpoint so the WAL does not outgrow the database between runs.
	s.writer.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	s.sharedMu.Lock()
	shared := s.shared
	s.sharedMu.Unlock()
	var sharedErr error
	if shared != nil {
		sharedErr = shared.Close()
	}
	return errors.Join(sharedErr, s.reader.Close(), s.checkpointer.Close(), s.writer.Close())
}
