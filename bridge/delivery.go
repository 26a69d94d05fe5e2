package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebridge/phonebridge/config"
)

// deliverer runs one queue per destination chat. A queue's worker exists
// only while the chat has undelivered events: it takes them in outbox
// order (handed over in memory as they are committed, or read back from
// the outbox when it is behind), sends them one at a time, and exits when
// the chat is drained. Chats never wait for each other; within a chat a
// failing event holds the ones behind it, which is what keeps per-chat
// order.
type deliverer struct {
	store      *Store
	log        *slog.Logger
	delivery   config.Delivery
	relay      config.Relay
	connectors func(name string) (Connector, bool)
	obs        Observer
	// maybeSentBelow is, after an unclean stop, the last outbox id that
	// the last run may have delivered unrecorded; set before any worker.
	maybeSentBelow int64

	// stop ends workers between sends; in-flight sends finish under
	// their own timeout, unless shutdown's budget runs out first and
	// abortSends cancels them.
	stop       chan struct{}
	stopOnce   sync.Once
	sends      context.Context
	abortSends context.CancelFunc

	mu     sync.Mutex
	queues map[Endpoint]*queue
	wg     sync.WaitGroup
	closed bool
}

type queue struct {
	dest Endpoint
	wake chan struct{} // capacity 1: "look at the outbox again"
	// Guarded by deliverer.mu.
	running bool
	resume  bool // skip the current backoff (Sink.Resume)
	// exited is closed once the last worker started has ended, its
	// deliveries' records queued; nil before the first.
	exited chan struct{}
	// paused holds the queue for a move of its chat (hold): no worker
	// starts, and a running one ends after its send in flight. Set under
	// deliverer.mu; read by the worker without it.
	paused atomic.Bool

	// Rows accepted since the worker last read the outbox, handed over in
	// memory so the worker need not read back what was just written.
	// Guarded by deliverer.mu. spilled means some rows are only in the
	// outbox (the buffer was full, or the queue is new and may have rows
	// from before a restart): the worker reads the outbox until it has
	// caught up.
	buffered []pendingRow
	spilled  bool

	// Rows whose record did not commit (flush), to send again from the
	// first: redoFrom and redoThrough are guarded by deliverer.mu, redo
	// says they are set, recordFails counts records failed in a row.
	redo        atomic.Bool
	redoFrom    int64
	redoThrough int64
	recordFails atomic.Int32

	// Only the worker touches these, and only one worker runs at a time.
	after int64 // last outbox id handed on; survives worker restarts
	// maybeSentThrough is the last row sent again after its record
	// failed: those may be on the destination already.
	maybeSentThrough int64
	// lastKey is the key of the last send (Outgoing.After of the next).
	lastKey string
	// ahead is the outbox read of the batch after the one being sent,
	// started so the chat's next send need not wait for it; nil when none.
	ahead *readAhead

	// created holds ids this queue made whose bookkeeping is not yet
	// committed, so an edit right behind its message still finds it.
	cacheMu sync.Mutex
	created map[int64][]string
}

const batchSize = 128

// readAhead is an outbox read running beside the sends: its goroutine
// sets rows and err, then closes done; only after that may they be read.
type readAhead struct {
	after int64 // the read is of the rows after this id
	done  chan struct{}
	rows  []pendingRow
	err   error
}

// readPending reads a chat's next rows from the outbox (tests watch it).
var readPending = pending

func newDeliverer(store *Store, log *slog.Logger, d config.Delivery, r config.Relay, conns func(string) (Connector, bool)) *deliverer {
	sends, abort := context.WithCancel(context.Background())
	return &deliverer{
		store:      store,
		log:        log,
		delivery:   d,
		relay:      r,
		connectors: conns,
		stop:       make(chan struct{}),
		sends:      sends,
		abortSends: abort,
		queues:     map[Endpoint]*queue{},
	}
}

// maxBuffered bounds the rows a queue holds in memory; past it, rows wait
// in the outbox alone, so a stalled destination costs no memory.
const maxBuffered = 512

// kick makes sure dest's queue is being worked.
func (d *deliverer) kick(dest Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.kickLocked(d.queueLocked(dest))
}

// offer hands a just-committed outbox row to its queue. It runs on the
// store's completion goroutine, in commit order, and never blocks.
func (d *deliverer) offer(dest Endpoint, row pendingRow) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queueLocked(dest)
	if !q.spilled {
		if len(q.buffered) < maxBuffered {
			q.buffered = append(q.buffered, row)
		} else {
			q.spilled = true
			q.buffered = nil
		}
	}
	d.kickLocked(q)
}

func (d *deliverer) queueLocked(dest Endpoint) *queue {
	q := d.queues[dest]
	if q == nil {
		q = &queue{dest: dest, wake: make(chan struct{}, 1), created: map[int64][]string{}, spilled: true}
		d.queues[dest] = q
	}
	return q
}

func (d *deliverer) kickLocked(q *queue) {
	if d.closed || q.paused.Load() {
		return
	}
	if !q.running {
		q.running = true
		q.exited = make(chan struct{})
		d.wg.Add(1)
		go d.work(q, q.exited)
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// resume cuts short the backoff of connector's queues (one chat, or all
// when chat is "").
func (d *deliverer) resume(connector, chat string) {
	d.mu.Lock()
	var woken []*queue
	for dest, q := range d.queues {
		if dest.Connector == connector && (chat == "" || dest.Chat == chat) && q.running {
			q.resume = true
			woken = append(woken, q)
		}
	}
	d.mu.Unlock()
	for _, q := range woken {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// shutdown stops workers after their current send and waits for them.
// shutdown stops the workers, letting sends in flight finish within
// ctx. A send still unanswered then (a destination that went silent) is
// cancelled: its event stays in the outbox, and answered is false, so the
// stop is not marked clean and the next start checks before resending.
// The error is for workers that do not end even then, within wait.
func (d *deliverer) shutdown(ctx context.Context, wait time.Duration) (answered bool, err error) {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.stopOnce.Do(func() { close(d.stop) })
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true, nil
	case <-ctx.Done():
	}
	d.abortSends()
	select {
	case <-done:
		return false, nil
	case <-time.After(wait):
		return false, fmt.Errorf("deliveries still in flight at shutdown, even after they were cancelled")
	}
}

func (d *deliverer) stopping() bool {
	select {
	case <-d.stop:
		return true
	default:
		return false
	}
}

// halted says q's worker is to end between sends: shutdown, or a hold.
func (d *deliverer) halted(q *queue) bool {
	return q.paused.Load() || d.stopping()
}

// hold pauses the queues of dests for a move of their chats: it waits,
// within ctx, until their workers have finished the send in flight and
// queued the records of what they delivered. Until release, rows offered
// to them wait in the outbox.
func (d *deliverer) hold(ctx context.Context, dests []Endpoint) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errors.New("delivery is stopping")
	}
	var exits []chan struct{}
	for _, dest := range dests {
		q := d.queueLocked(dest)
		q.paused.Store(true)
		if q.exited != nil {
			exits = append(exits, q.exited)
		}
		select {
		case q.wake <- struct{}{}: // out of a backoff
		default:
		}
	}
	d.mu.Unlock()
	if heldHook != nil {
		heldHook()
	}
	for _, ch := range exits {
		select {
		case <-ch:
		case <-ctx.Done():
			d.release(dests, false)
			return ctx.Err()
		}
	}
	return nil
}

// heldHook, when set by a test, runs once hold has paused its queues,
// before it waits for their sends in flight.
var heldHook func()

// release ends a hold. When the held chats moved, their queues are made
// anew from the outbox: rows moved between them (a worker's place, after,
// is only good for its own chat's rows) and what their memory holds names
// the old ids. Rows that may have been delivered unrecorded stay flagged
// MaybeSent. Otherwise the queues go on where they stopped.
func (d *deliverer) release(dests []Endpoint, moved bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var maybeSent int64
	if moved {
		for _, dest := range dests {
			q := d.queues[dest]
			if q == nil {
				continue
			}
			maybeSent = max(maybeSent, q.maybeSentThrough)
			if q.redo.Load() {
				maybeSent = max(maybeSent, q.redoThrough, q.after)
			}
			delete(d.queues, dest)
		}
	}
	for _, dest := range dests {
		q := d.queueLocked(dest)
		q.paused.Store(false)
		// No worker runs on a held or new queue: this is not racing one.
		q.maybeSentThrough = max(q.maybeSentThrough, maybeSent)
		d.kickLocked(q)
	}
}

func (d *deliverer) work(q *queue, exited chan struct{}) {
	defer close(exited)
	defer d.wg.Done()
	var done completions
	defer d.flush(q, &done)
	for !d.halted(q) {
		if !d.rewind(q, &done) {
			break
		}
		rows, err := d.next(q)
		if err != nil {
			d.log.Error("cannot read the outbox; will retry", "destination", q.dest.String(), "err", err)
			d.flush(q, &done)
			if !d.sleep(q, d.delivery.RetryMin) {
				break
			}
			continue
		}
		if len(rows) == 0 {
			d.mu.Lock()
			select {
			case <-q.wake:
				d.mu.Unlock()
				continue
			default:
			}
			if len(q.buffered) > 0 || q.spilled {
				d.mu.Unlock()
				continue
			}
			q.running = false
			q.resume = false
			d.mu.Unlock()
			return
		}
		for i := range rows {
			if q.redo.Load() {
				break // rows before these go again first
			}
			if rows[i].id <= q.after {
				continue // read from the outbox already
			}
			if !d.deliverRow(q, &rows[i], &done) {
				break
			}
			q.after = rows[i].id
			if len(done.rows) >= flushEvery {
				d.flush(q, &done)
			}
		}
		d.flush(q, &done)
	}
	// Before the next worker may start, and before shutdown returns and
	// the store may close.
	d.dropReadAhead(q)
	d.mu.Lock()
	q.running = false
	if !q.paused.Load() && !d.stopping() {
		// Released (a hold given up) while this one was ending, which
		// that release took for a running worker: go on.
		d.kickLocked(q)
	}
	d.mu.Unlock()
}

// next returns the queue's next rows: those handed over in memory, or,
// while the queue is spilled, the next batch from the outbox. Once the
// outbox has nothing more, the queue leaves spilled mode; rows committed
// meanwhile are in the outbox, so it is read once more before memory is
// trusted, and rows seen twice are skipped by id.
func (d *deliverer) next(q *queue) ([]pendingRow, error) {
	d.mu.Lock()
	if !q.spilled {
		rows := q.buffered
		q.buffered = nil
		d.mu.Unlock()
		return rows, nil
	}
	d.mu.Unlock()
	rows, err := d.takeReadAhead(q)
	if err != nil || len(rows) > 0 {
		d.startReadAhead(q, rows)
		return rows, err
	}
	d.mu.Lock()
	q.spilled = false
	q.buffered = nil
	d.mu.Unlock()
	// Read now, not ahead: only a read begun after spilled was cleared
	// sees every row that memory did not get.
	rows, err = readPending(context.Background(), d.store, q.dest, q.after, batchSize)
	if err != nil || len(rows) == batchSize {
		// More may wait in the outbox that memory never got: keep reading it.
		d.mu.Lock()
		q.spilled = true
		q.buffered = nil
		d.mu.Unlock()
		d.startReadAhead(q, rows)
	}
	return rows, err
}

// takeReadAhead returns the rows after q.after: the read-ahead's, when it
// was begun from there and succeeded (a rewind or a send cut short moves
// q.after elsewhere), else read now.
func (d *deliverer) takeReadAhead(q *queue) ([]pendingRow, error) {
	if ra := q.ahead; ra != nil {
		q.ahead = nil
		<-ra.done
		if ra.after == q.after && ra.err == nil {
			return ra.rows, nil
		}
	}
	return readPending(context.Background(), d.store, q.dest, q.after, batchSize)
}

// startReadAhead begins reading the batch after rows, a full batch just
// read from the outbox, so it is there when their last send is answered.
func (d *deliverer) startReadAhead(q *queue, rows []pendingRow) {
	if len(rows) != batchSize {
		return // the outbox had no more, or the read failed
	}
	ra := &readAhead{after: rows[len(rows)-1].id, done: make(chan struct{})}
	q.ahead = ra
	go func() {
		defer close(ra.done)
		ra.rows, ra.err = readPending(context.Background(), d.store, q.dest, ra.after, batchSize)
	}()
}

// dropReadAhead waits for a read-ahead still running and forgets it: a
// worker ending leaves no read behind.
func (d *deliverer) dropReadAhead(q *queue) {
	if ra := q.ahead; ra != nil {
		q.ahead = nil
		<-ra.done
	}
}

// rewind sends again, after a backoff, the rows whose record did not
// commit: they are still in the outbox, and they are sent before any
// later row, so the chat's order holds. False on shutdown.
func (d *deliverer) rewind(q *queue, done *completions) bool {
	if !q.redo.Load() {
		return true
	}
	d.flush(q, done)
	// Wait for the records queued so far, so rows recorded meanwhile are
	// not read back from the outbox and sent once more.
	d.store.Write(context.Background(), func(*Tx) error { return nil })
	if !d.sleep(q, d.backoff(int(q.recordFails.Load()))) {
		return false
	}
	d.mu.Lock()
	from, through := q.redoFrom, q.redoThrough
	q.redoFrom, q.redoThrough = 0, 0
	q.redo.Store(false)
	q.spilled = true
	q.buffered = nil
	d.mu.Unlock()
	q.maybeSentThrough = max(q.maybeSentThrough, through, q.after)
	q.after = min(q.after, from-1)
	q.lastKey = "" // the key sent before row from is not known
	return true
}

// redeliver has rows first..last of q sent again: their record did not
// commit, so nothing says they reached the destination.
func (d *deliverer) redeliver(q *queue, first, last int64) {
	q.recordFails.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if q.redoFrom == 0 || first < q.redoFrom {
		q.redoFrom = first
	}
	q.redoThrough = max(q.redoThrough, last)
	q.redo.Store(true)
	d.kickLocked(q)
}

// allRecorded waits for the records queued so far and reports whether
// every delivery made is recorded: none waits to be sent again.
func (d *deliverer) allRecorded(ctx context.Context) bool {
	if d.store.Write(ctx, func(*Tx) error { return nil }) != nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range d.queues {
		if q.redo.Load() {
			return false
		}
	}
	return true
}

// flushEvery bounds how many delivered rows a worker records at once.
// Recording in batches saves the store most of its work under load; the
// price is that a crash may resend up to this many events per chat, with
// their same keys, which idempotent destinations ignore.
const flushEvery = 64

// completions are deliveries made but not yet recorded.
type completions struct {
	rows   []int64
	copies []createdCopy
	// mark is Store.FailedWrites when the first of rows began to be sent.
	mark uint64
}

// flush records the deliveries in done: the ids they created and the end
// of their outbox rows, in one write. Every row between the first and the
// last that is not marked failed was delivered: the worker goes in order
// and marks a row failed (through the same ordered writer) before it
// moves past it. Nothing waits for the record (the ids are cached in
// q.created meanwhile), so it is a lazy write, sharing the next commit:
// a crash before that sends these again, flagged MaybeSent.
func (d *deliverer) flush(q *queue, done *completions) {
	if len(done.rows) == 0 {
		return
	}
	first, last, n, mark := done.rows[0], done.rows[len(done.rows)-1], len(done.rows), done.mark
	copies := done.copies
	*done = completions{}
	dest := q.dest
	unconfirmed := false
	d.store.WriteLazy(func(tx *Tx) error {
		// A write that failed since these sends began may be one a
		// destination queued without waiting (the api connector logs what
		// it is sent that way): then recording them could lose them.
		if unconfirmed = d.store.FailedWrites() != mark; unconfirmed {
			return nil
		}
		return delivered(tx, dest, first, last, copies)
	}, func(err error) {
		q.cacheMu.Lock()
		for _, c := range copies {
			if c.part >= 0 {
				delete(q.created, c.msg)
			}
		}
		q.cacheMu.Unlock()
		if err == nil && !unconfirmed {
			q.recordFails.Store(0)
			return
		}
		// They stay in the outbox and go again, with the same keys, which
		// destinations that already have them ignore.
		level := slog.LevelDebug
		if err != nil && q.recordFails.Load() == 0 && !errors.Is(err, ErrCannotWrite) {
			level = slog.LevelWarn // the store reports ErrCannotWrite itself
		}
		d.log.Log(context.Background(), level, "deliveries not recorded; they are sent again", "destination", dest.String(), "events", n, "err", err)
		d.redeliver(q, first, last)
	})
}

// sleep waits for wait, a Resume, shutdown or a hold; false for the last two.
func (d *deliverer) sleep(q *queue, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return false
		case <-t.C:
			return true
		case <-q.wake:
			if q.paused.Load() {
				return false
			}
			// New events for this chat do not shorten a backoff; a Resume does.
			d.mu.Lock()
			r := q.resume
			q.resume = false
			d.mu.Unlock()
			if r {
				return true
			}
		}
	}
}

// deliverRow sends one outbox row, retrying transient errors with backoff;
// false when the deliverer is stopping and the row is left for next time.
func (d *deliverer) deliverRow(q *queue, r *pendingRow, done *completions) bool {
	var sent []createdCopy // parts already sent, kept across retries
	mark := d.store.FailedWrites()
	for {
		if d.halted(q) {
			return false
		}
		if wait := time.Until(r.nextAt); wait > 0 {
			if !d.sleep(q, wait) {
				return false
			}
		}
		copies, err := d.attempt(q, r, sent)
		if err == nil {
			if len(done.rows) == 0 {
				done.mark = mark
			}
			d.finish(q, r, copies, done)
			if r.attempts > 0 {
				d.log.Info("delivery resumed", "destination", q.dest.String(), "attempts", r.attempts+1)
			}
			return true
		}
		var partial partialError
		if errors.As(err, &partial) {
			sent = partial.sent
			err = partial.err
		}
		age := time.Since(r.createdAt)
		switch {
		case IsPermanent(err):
			d.obs.DeliveryFailed(q.dest.Connector, r.ev.Event.Kind, FailPermanent)
			d.fail(r, q.dest, err.Error())
			d.log.Error("delivery failed permanently; event skipped", "destination", q.dest.String(), "kind", r.ev.Event.Kind, "err", err)
			return true
		case d.delivery.GiveUpAfter > 0 && age > d.delivery.GiveUpAfter:
			d.obs.DeliveryFailed(q.dest.Connector, r.ev.Event.Kind, FailGaveUp)
			d.fail(r, q.dest, fmt.Sprintf("gave up after %s of retries: %v", d.delivery.GiveUpAfter, err))
			d.log.Error("delivery gave up; event skipped", "destination", q.dest.String(), "retried_for", age.Round(time.Second), "err", err)
			return true
		}
		r.attempts++
		wait := d.backoff(r.attempts)
		reason := FailRetry
		if ra, ok := retryAfterOf(err); ok {
			wait, reason = ra, FailRateLimited
		}
		d.obs.DeliveryFailed(q.dest.Connector, r.ev.Event.Kind, reason)
		r.nextAt = time.Now().Add(wait)
		d.retryLater(r, err.Error())
		d.flush(q, done) // record what went through before waiting
		level := slog.LevelDebug
		if r.attempts == 1 {
			level = slog.LevelWarn
		}
		d.log.Log(context.Background(), level, "delivery delayed; will retry", "destination", q.dest.String(), "attempt", r.attempts, "retry_in", wait.Round(time.Millisecond), "err", err)
	}
}

// backoff is exponential from retry_min to retry_max with jitter, so many
// chats failing at once do not retry in lockstep.
func (d *deliverer) backoff(attempt int) time.Duration {
	wait := d.delivery.RetryMin
	for i := 1; i < attempt && wait < d.delivery.RetryMax; i++ {
		wait *= 2
	}
	if wait > d.delivery.RetryMax {
		wait = d.delivery.RetryMax
	}
	return wait/2 + rand.N(wait/2+1)
}

// finish notes a delivered row; flush records it.
func (d *deliverer) finish(q *queue, r *pendingRow, copies []createdCopy, done *completions) {
	q.cacheMu.Lock()
	for _, c := range copies {
		if c.part >= 0 && c.native != "" && c.msg != 0 {
			q.created[c.msg] = append(q.created[c.msg], c.native)
		}
	}
	q.cacheMu.Unlock()
	done.rows = append(done.rows, r.id)
	done.copies = append(done.copies, copies...)
}

func (d *deliverer) fail(r *pendingRow, dest Endpoint, reason string) {
	d.store.WriteAsync(func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE outbox SET failed = 1, last_error = ? WHERE id = ?`, reason, r.id)
		return err
	}, func(err error) {
		if err != nil {
			d.log.Error("cannot record a failed delivery", "destination", dest.String(), "err", err)
		}
	})
}

func (d *deliverer) retryLater(r *pendingRow, reason string) {
	attempts, next := r.attempts, r.nextAt.UnixMilli()
	d.store.WriteAsync(func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?`, attempts, next, reason, r.id)
		return err
	}, func(error) {})
}

// partialError is a failure after some parts of a split message were sent.
type partialError struct {
	sent []createdCopy
	err  error
}

func (e partialError) Error() string { return e.err.Error() }

// step is one Send a delivery makes, and what its native id stands for.
type step struct {
	out  Outgoing
	msg  int64 // logical message the created id is a copy of; 0 records none
	part int   // >= 0 a part of msg; partSide an id that is not msg itself
}

// attempt plans and sends one row; parts already in sent are skipped.
func (d *deliverer) attempt(q *queue, r *pendingRow, sent []createdCopy) ([]createdCopy, error) {
	conn, ok := d.connectors(q.dest.Connector)
	if !ok {
		// Removed from the config (by a reload, or before this start): the
		// event waits for the connector to come back, up to give_up_after.
		return nil, fmt.Errorf("connector %q is not configured; the event waits in the outbox until it is", q.dest.Connector)
	}
	ctx, cancel := context.WithTimeout(d.sends, d.delivery.SendTimeout)
	defer cancel()
	steps, err := d.plan(ctx, q, conn, r)
	if err != nil {
		return nil, err
	}
	copies := sent
	for i := len(sent); i < len(steps); i++ {
		s := steps[i]
		s.out.After = q.lastKey
		start := time.Now()
		native, err := conn.Send(ctx, &s.out)
		if err != nil {
			if ctx.Err() != nil && !IsPermanent(err) {
				err = fmt.Errorf("no answer within %s (delivery.send_timeout): %w", d.delivery.SendTimeout, err)
			}
			if len(copies) > 0 {
				return nil, partialError{sent: copies, err: err}
			}
			return nil, err
		}
		d.obs.Delivered(q.dest.Connector, s.out.Kind, time.Since(start))
		q.lastKey = s.out.Key
		copies = append(copies, createdCopy{native: native, msg: s.msg, part: s.part})
	}
	return copies, nil
}

// lookup returns msg's native ids on the queue's chat, part order.
func (d *deliverer) lookup(ctx context.Context, q *queue, msg int64) ([]string, error) {
	if msg == 0 {
		return nil, nil
	}
	q.cacheMu.Lock()
	ids, ok := q.created[msg]
	q.cacheMu.Unlock()
	if ok {
		return ids, nil
	}
	return nativeOn(ctx, d.store, msg, q.dest)
}

// plan turns a stored inbound event into the sends its destination needs:
// ids rewritten to the destination's, and fallbacks where it lacks a
// capability. No steps means there is nothing to do there.
func (d *deliverer) plan(ctx context.Context, q *queue, conn Connector, r *pendingRow) ([]step, error) {
	st := r.ev
	ev := st.Event
	if !ev.Kind.Valid() || !ev.Kind.Durable() {
		return nil, Permanentf("outbox entry %d is unreadable (kind %q); it was written by another version or damaged", r.id, ev.Kind)
	}
	caps := conn.Capabilities()
	db := d.store

	// Targets that were unknown when the event arrived may be known now.
	var err error
	if st.TargetMsg == 0 && ev.Target != "" {
		if st.TargetMsg, err = messageOf(db, ev.Chat.Connector, ev.Chat.ID, ev.Target); err != nil {
			return nil, err
		}
	}
	if st.ReplyMsg == 0 && ev.ReplyTo != "" {
		if st.ReplyMsg, err = messageOf(db, ev.Chat.Connector, ev.Chat.ID, ev.ReplyTo); err != nil {
			return nil, err
		}
	}

	out := Outgoing{Event: ev, Key: deliveryKey(r.id, 0), MaybeSent: r.attempts > 0 || r.id <= d.maybeSentBelow || r.id <= q.maybeSentThrough}
	out.Origin = ev.Chat
	out.Chat = ChatRef{Connector: q.dest.Connector, ID: q.dest.Chat}
	out.ReplyTo, out.Target, out.TargetReaction = "", "", ""
	if !caps.HTML {
		out.HTML = ""
	}

	switch ev.Kind {
	case KindMessage:
		if err := d.reply(ctx, q, &out, &st, st.ReplyMsg, caps); err != nil {
			return nil, err
		}
		d.media(&out, caps)
		if out.Location != nil && !caps.Locations {
			locationAsText(&out)
		}
		if out.Poll != nil && !caps.Polls {
			pollAsText(&out)
		}
		return d.split(r.id, out, st.Msg, 0, caps), nil

	case KindEdit:
		ids, err := d.lookup(ctx, q, st.TargetMsg)
		if err != nil {
			return nil, err
		}
		if out.Location != nil && !caps.Locations {
			locationAsText(&out)
		}
		fits := caps.MaxTextLength == 0 || len([]rune(out.Text)) <= caps.MaxTextLength
		if caps.Edits && len(ids) > 0 && fits {
			out.Target = ids[0]
			return []step{{out: out, msg: st.Msg, part: partSide}}, nil
		}
		if d.relay.Edits == "drop" || ev.Location != nil {
			// A live location moves every minute or so: where its
			// message cannot follow, a line per move would drown the chat.
			return nil, nil
		}
		asEditCopy(&out)
		if err := d.reply(ctx, q, &out, &st, st.TargetMsg, caps); err != nil {
			return nil, err
		}
		return d.split(r.id, out, st.Msg, partSide, caps), nil

	case KindDelete:
		ids, err := d.lookup(ctx, q, st.TargetMsg)
		if err != nil || len(ids) == 0 {
			return nil, err // nothing of it is there to delete
		}
		if caps.Deletes {
			steps := make([]step, len(ids))
			for i, id := range ids {
				o := out
				o.Target = id
				o.Key = deliveryKey(r.id, i)
				steps[i] = step{out: o, msg: st.Msg, part: partSide}
			}
			return steps, nil
		}
		if d.relay.Deletes == "drop" {
			return nil, nil
		}
		asNotice(&out, deleteNotice(&ev))
		if caps.Replies {
			out.ReplyTo = ids[0]
		}
		return []step{{out: out, msg: st.Msg, part: partSide}}, nil

	case KindReaction:
		ids, err := d.lookup(ctx, q, st.TargetMsg)
		if err != nil {
			return nil, err
		}
		// The reaction this one replaces goes first, as its removal or,
		// where it went as a notice, the notice's delete.
		var steps []step
		if replaced, err := d.lookup(ctx, q, st.ReactionMsg); err != nil {
			return nil, err
		} else if len(replaced) > 0 {
			gone := out
			gone.Key, gone.Emoji, gone.ReplacesReaction = deliveryKey(r.id, 1), "", false
			switch {
			case caps.Reactions && len(ids) > 0:
				gone.Kind, gone.Target, gone.TargetReaction = KindReactionRemove, ids[0], replaced[0]
				steps = append(steps, step{out: gone, msg: 0})
			case caps.Deletes:
				gone.Kind, gone.Target = KindDelete, replaced[0]
				steps = append(steps, step{out: gone, msg: 0})
			}
		}
		if caps.Reactions && len(ids) > 0 {
			out.Target = ids[0]
			return append(steps, step{out: out, msg: st.Msg, part: 0}), nil
		}
		if d.relay.Reactions == "drop" || st.TargetMsg == 0 {
			return nil, nil
		}
		qt, err := quoteOf(ctx, db, &st, st.TargetMsg)
		if err != nil {
			return nil, err
		}
		replied := caps.Replies && len(ids) > 0
		if replied {
			qt = nil // the reply shows what was reacted to
		}
		asNotice(&out, reactionNotice(&ev, qt))
		if replied {
			out.ReplyTo = ids[0]
		}
		// Recorded as the reaction's copy so removing the reaction can
		// delete this notice.
		return append(steps, step{out: out, msg: st.Msg, part: 0}), nil

	case KindVote:
		if st.TargetMsg == 0 || ev.Vote == nil || len(ev.Vote.Options) == 0 {
			return nil, nil // a vote in a poll the bridge never saw asked
		}
		ids, err := d.lookup(ctx, q, st.TargetMsg)
		if err != nil {
			return nil, err
		}
		if caps.Polls && len(ids) > 0 {
			out.Target = ids[0]
			return []step{{out: out, msg: st.Msg, part: 0}}, nil
		}
		// No poll there to vote in: the vote and the count as words,
		// answering the poll's copy where there is one.
		asNotice(&out, VoteText(&ev))
		out.Vote = nil
		if caps.Replies && len(ids) > 0 {
			out.ReplyTo = ids[0]
		}
		return []step{{out: out, msg: st.Msg, part: 0}}, nil

	case KindReactionRemove:
		ids, err := d.lookup(ctx, q, st.TargetMsg)
		if err != nil {
			return nil, err
		}
		reactions, err := d.lookup(ctx, q, st.ReactionMsg)
		if err != nil {
			return nil, err
		}
		if caps.Reactions && len(ids) > 0 {
			out.Target = ids[0]
			if len(reactions) > 0 {
				out.TargetReaction = reactions[0]
			}
			return []step{{out: out, msg: st.Msg, part: partSide}}, nil
		}
		if caps.Deletes && len(reactions) > 0 {
			// The reaction went there as a notice: take the notice back.
			out.Kind = KindDelete
			out.Target = reactions[0]
			out.Emoji = ""
			return []step{{out: out, msg: st.ReactionMsg, part: partSide}}, nil
		}
		return nil, nil
	}
	return nil, Permanentf("outbox entry %d has kind %q, which is never stored", r.id, ev.Kind)
}

// reply points out at the destination's copy of msg, or quotes msg where
// the destination cannot reply or has no copy.
func (d *deliverer) reply(ctx context.Context, q *queue, out *Outgoing, st *stored, msg int64, caps Capabilities) error {
	if msg == 0 {
		return nil
	}
	ids, err := d.lookup(ctx, q, msg)
	if err != nil {
		return err
	}
	if caps.Replies && len(ids) > 0 {
		out.ReplyTo = ids[0]
		return nil
	}
	qt, err := quoteOf(ctx, d.store, st, msg)
	if err != nil || qt == nil {
		return err
	}
	withQuote(out, qt)
	return nil
}

// media lets the destination open attachments through their origin, or
// replaces them with placeholders where it carries no media.
func (d *deliverer) media(out *Outgoing, caps Capabilities) {
	if len(out.Media) == 0 {
		return
	}
	if !caps.Media {
		mediaPlaceholders(out)
		return
	}
	origin, _ := d.connectors(out.Origin.Connector)
	opener, _ := origin.(MediaOpener)
	media := make([]Media, len(out.Media))
	for i := range out.Media {
		media[i] = *openable(&out.Media[i], out.Origin.Connector, opener)
	}
	out.Media = media
}

// split cuts text over the destination's limit into several messages,
// each its own step with its own key.
func (d *deliverer) split(rowID int64, out Outgoing, msg int64, part int, caps Capabilities) []step {
	pieces := splitText(out.Text, caps.MaxTextLength)
	if len(pieces) == 1 {
		return []step{{out: out, msg: msg, part: part}}
	}
	steps := make([]step, 0, len(pieces))
	for i, p := range pieces {
		o := out
		o.Text = p
		o.HTML = "" // formatting cannot be cut safely; the plain text is whole
		o.Key = deliveryKey(rowID, i)
		if i > 0 {
			// The attachments and the place go once, with the first part.
			o.ReplyTo = ""
			o.Media, o.Location, o.Poll = nil, nil, nil
		}
		pt := part
		if part >= 0 {
			pt = i
		}
		steps = append(steps, step{out: o, msg: msg, part: pt})
	}
	return steps
}
