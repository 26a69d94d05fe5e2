package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// writeWait bounds one write: a client that takes no bytes for this
	// long is dead or stuck, and dropped.
	writeWait = 10 * time.Second
	// pingEvery and pongWait find dead clients: a client that answers no
	// ping (or sends nothing) for pongWait is dropped.
	pingEvery = 30 * time.Second
	pongWait  = 75 * time.Second
	// replayPage is how many logged events one resume query reads, so a
	// slow client never holds a database connection.
	replayPage = 256
)

// hub knows every websocket client and which chats each subscribed to.
type hub struct {
	c *Connector

	mu       sync.RWMutex
	chats    map[string]map[*subscription]struct{}
	clients  map[*client]struct{}
	stopping bool
	wg       sync.WaitGroup // one per registered client's handler
}

func newHub(c *Connector) *hub {
	return &hub{c: c, chats: map[string]map[*subscription]struct{}{}, clients: map[*client]struct{}{}}
}

// register adds cl unless the connector is stopping.
func (h *hub) register(cl *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping {
		return false
	}
	h.clients[cl] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *hub) unregister(cl *client) {
	h.mu.Lock()
	delete(h.clients, cl)
	for chat, sub := range cl.subs {
		h.removeLocked(chat, sub)
	}
	h.mu.Unlock()
	h.wg.Done()
}

func (h *hub) removeLocked(chat string, sub *subscription) {
	if subs := h.chats[chat]; subs != nil {
		delete(subs, sub)
		if len(subs) == 0 {
			delete(h.chats, chat)
		}
	}
}

// subscribe registers a new subscription of cl to chat, replacing any it
// had, in replay mode: live frames are held until goLive.
func (h *hub) subscribe(cl *client, chat string) *subscription {
	sub := &subscription{cl: cl, replaying: true}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := cl.subs[chat]; old != nil {
		h.removeLocked(chat, old)
	}
	cl.subs[chat] = sub
	if h.chats[chat] == nil {
		h.chats[chat] = map[*subscription]struct{}{}
	}
	h.chats[chat][sub] = struct{}{}
	return sub
}

func (h *hub) unsubscribe(cl *client, chat string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub := cl.subs[chat]; sub != nil {
		h.removeLocked(chat, sub)
		delete(cl.subs, chat)
	}
}

// broadcast hands a committed event to the chat's subscribers. It runs on
// the store's completion goroutine, in commit (so seq) order, and never blocks.
func (h *hub) broadcast(chat string, seq int64, frame []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for sub := range h.chats[chat] {
		sub.deliver(seq, frame)
	}
}

func (h *hub) stop() {
	h.mu.Lock()
	h.stopping = true
	clients := make([]*client, 0, len(h.clients))
	for cl := range h.clients {
		clients = append(clients, cl)
	}
	h.mu.Unlock()
	for _, cl := range clients {
		cl.kill(websocket.CloseGoingAway, "phonebridge is stopping")
	}
}

func (h *hub) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("websocket clients did not close in time: %w", ctx.Err())
	}
}

// forceClose cuts every client's connection; their handlers then finish.
func (h *hub) forceClose() {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for cl := range h.clients {
		cl.conn.NetConn().Close()
	}
}

// subscription is one client's interest in one chat.
type subscription struct {
	cl *client

	mu        sync.Mutex
	replaying bool
	pending   []pendingFrame // live frames that arrived during the replay
	// sent is the highest seq this subscription has passed on. A commit's
	// broadcast can arrive after the replay already sent that seq (the
	// store calls back after the whole group commit), so anything at or
	// below it is a repeat and is dropped.
	sent int64
}

type pendingFrame struct {
	seq   int64
	frame []byte
}

func (s *subscription) deliver(seq int64, frame []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.replaying {
		if seq != 0 {
			if seq <= s.sent {
				return
			}
			s.sent = seq
		}
		s.cl.push(frame)
		return
	}
	if len(s.pending) >= s.cl.limit {
		s.cl.tooSlow(len(s.pending))
		return
	}
	s.pending = append(s.pending, pendingFrame{seq, frame})
}

// goLive ends the replay, which sent everything up to seq upto: frames
// held meanwhile that the replay already covered are dropped, the rest
// sent, and from then on frames go straight to the client.
func (s *subscription) goLive(upto int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = max(s.sent, upto)
	for _, p := range s.pending {
		switch {
		case p.seq == 0: // typing and read: never logged, never repeated
			s.cl.pushForce(p.frame)
		case p.seq > s.sent:
			s.sent = p.seq
			s.cl.pushForce(p.frame)
		}
	}
	s.pending, s.replaying = nil, false
}

// client is one websocket connection. Its reader goroutine handles the
// client's frames; its writer goroutine alone writes data frames, from a
// queue of at most limit frames.
type client struct {
	c      *Connector
	conn   *websocket.Conn
	ctx    context.Context
	remote string
	limit  int

	mu     sync.Mutex
	frames [][]byte
	killed bool
	code   int
	reason string

	wake       chan struct{} // capacity 1: frames queued
	room       chan struct{} // capacity 1: the writer took frames
	quit       chan struct{} // closed by kill
	writerDone chan struct{}

	// Replies to send frames leave in the order the sends came, whatever
	// order the core commits or refuses them in.
	rmu       sync.Mutex
	nextReply uint64
	headReply uint64
	ready     map[uint64][]byte
	inflight  chan struct{} // bounds sends awaiting their reply

	subs map[string]*subscription // guarded by hub.mu for writes
}

func (c *Connector) handleWS(w http.ResponseWriter, r *http.Request) {
	conn, err := c.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl := &client{
		c:          c,
		conn:       conn,
		ctx:        ctx,
		remote:     r.RemoteAddr,
		limit:      c.opts.ClientBuffer,
		wake:       make(chan struct{}, 1),
		room:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		ready:      map[uint64][]byte{},
		inflight:   make(chan struct{}, c.opts.ClientBuffer),
		subs:       map[string]*subscription{},
	}
	if !c.hub.register(cl) {
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "phonebridge is stopping"), time.Now().Add(writeWait))
		conn.Close()
		return
	}
	defer c.hub.unregister(cl)
	c.log.Debug("websocket client connected", "remote", cl.remote)

	cl.pushForce(mustJSON(helloFrame{Type: "hello", Version: 1, Connector: c.name}))
	go cl.writeLoop()
	cl.readLoop()
	cl.kill(0, "")
	<-cl.writerDone
	conn.Close()
	c.log.Debug("websocket client disconnected", "remote", cl.remote)
}

// kill ends the connection, with a close frame when code is not 0. The
// first call wins. It never blocks: the writer sends the close frame.
func (cl *client) kill(code int, reason string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.killLocked(code, reason)
}

func (cl *client) killLocked(code int, reason string) {
	if cl.killed {
		return
	}
	cl.killed, cl.code, cl.reason = true, code, reason
	cl.frames = nil
	close(cl.quit)
}

func (cl *client) tooSlow(unread int) {
	reason := fmt.Sprintf("client too slow: %d frames unread", unread)
	cl.kill(websocket.ClosePolicyViolation, reason)
	cl.c.log.Warn("websocket client dropped: "+reason, "connector", cl.c.name, "remote", cl.remote)
}

// push queues a frame without blocking (it may run on the store's writer
// goroutine); a client whose queue is full is dropped as too slow.
func (cl *client) push(frame []byte) {
	cl.mu.Lock()
	if cl.killed {
		cl.mu.Unlock()
		return
	}
	if n := len(cl.frames); n >= cl.limit {
		cl.mu.Unlock()
		cl.tooSlow(n)
		return
	}
	cl.frames = append(cl.frames, frame)
	cl.mu.Unlock()
	cl.signal(cl.wake)
}

// pushForce queues a frame whatever the queue's length; callers bound
// how many they add.
func (cl *client) pushForce(frame []byte) {
	cl.mu.Lock()
	if cl.killed {
		cl.mu.Unlock()
		return
	}
	cl.frames = append(cl.frames, frame)
	cl.mu.Unlock()
	cl.signal(cl.wake)
}

// pushWait queues a frame from the reader goroutine, waiting while the
// queue is over half full: replays and replies slow down to the client's
// pace instead of dropping it, and live frames keep the other half.
func (cl *client) pushWait(frame []byte) bool {
	for {
		cl.mu.Lock()
		if cl.killed {
			cl.mu.Unlock()
			return false
		}
		if len(cl.frames) < max(1, cl.limit/2) {
			cl.frames = append(cl.frames, frame)
			cl.mu.Unlock()
			cl.signal(cl.wake)
			return true
		}
		cl.mu.Unlock()
		select {
		case <-cl.room:
		case <-cl.quit:
			return false
		}
	}
}

func (cl *client) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (cl *client) take() [][]byte {
	cl.mu.Lock()
	frames := cl.frames
	cl.frames = nil
	cl.mu.Unlock()
	cl.signal(cl.room)
	return frames
}

// extendRead pushes the read deadline on while the client is alive; once
// it is killed the deadline set for the close handshake stands.
func (cl *client) extendRead() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if !cl.killed {
		cl.conn.SetReadDeadline(time.Now().Add(pongWait))
	}
}

func (cl *client) isKilled() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.killed
}

func (cl *client) writeLoop() {
	defer close(cl.writerDone)
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		select {
		case <-cl.quit:
			cl.closeWrite()
			return
		case <-ping.C:
			if err := cl.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				cl.broken()
				return
			}
		case <-cl.wake:
			for _, f := range cl.take() {
				select {
				case <-cl.quit:
					cl.closeWrite()
					return
				default:
				}
				cl.conn.SetWriteDeadline(time.Now().Add(writeWait))
				if err := cl.conn.WriteMessage(websocket.TextMessage, f); err != nil {
					cl.broken()
					return
				}
			}
		}
	}
}

// broken ends a connection that can no longer be written to.
func (cl *client) broken() {
	cl.kill(0, "")
	cl.conn.SetReadDeadline(time.Now())
}

// closeWrite sends the close frame kill asked for and gives the client
// closeGrace to answer it; the reader keeps reading until then so the
// close frame is not lost to a reset.
func (cl *client) closeWrite() {
	cl.mu.Lock()
	code, reason := cl.code, cl.reason
	cl.mu.Unlock()
	if code == 0 {
		cl.conn.SetReadDeadline(time.Now())
		return
	}
	msg := websocket.FormatCloseMessage(code, reason)
	if err := cl.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait)); err != nil {
		cl.conn.SetReadDeadline(time.Now())
		return
	}
	cl.conn.SetReadDeadline(time.Now().Add(closeGrace))
}

func (cl *client) readLoop() {
	limit := cl.c.opts.MaxMessageBytes
	cl.extendRead()
	cl.conn.SetPongHandler(func(string) error { cl.extendRead(); return nil })
	for {
		_, r, err := cl.conn.NextReader()
		if err != nil {
			return
		}
		if cl.isKilled() {
			// Closing: discard until the client answers or the deadline.
			io.Copy(io.Discard, r)
			continue
		}
		// Read one byte past the limit to tell "at" from "over" without
		// ever holding more.
		data, err := io.ReadAll(io.LimitReader(r, limit+1))
		if err != nil {
			return
		}
		if int64(len(data)) > limit {
			cl.kill(websocket.CloseMessageTooBig, fmt.Sprintf("frame over max_message_bytes (%d bytes)", limit))
			continue
		}
		cl.extendRead()
		cl.handle(data)
	}
}

func (cl *client) handle(data []byte) {
	var f clientFrame
	if e := decodeStrict(data, &f, "frame"); e != nil {
		cl.pushWait(errorFrame("", e))
		return
	}
	switch f.Type {
	case "send":
		cl.handleSend(&f)
	case "subscribe":
		cl.handleSubscribe(&f)
	case "unsubscribe":
		if f.Chat == "" {
			cl.pushWait(errorFrame(f.Ref, badRequest("chat is required")))
			return
		}
		cl.c.hub.unsubscribe(cl, f.Chat)
		cl.pushWait(mustJSON(replyFrame{Type: "unsubscribed", Ref: f.Ref, Chat: f.Chat}))
	case "ping":
		cl.pushWait(mustJSON(replyFrame{Type: "pong", Ref: f.Ref}))
	case "":
		cl.pushWait(errorFrame(f.Ref, badRequest("type is required: subscribe, unsubscribe, send or ping")))
	default:
		cl.pushWait(errorFrame(f.Ref, badRequest("type %q is not one of subscribe, unsubscribe, send, ping", f.Type)))
	}
}

// handleSend submits the frame's event without waiting for the core:
// clients may pipeline sends, and the reply arrives through the callback.
func (cl *client) handleSend(f *clientFrame) {
	// Past ClientBuffer unanswered sends, stop reading: TCP then holds
	// the client back instead of memory growing here.
	select {
	case cl.inflight <- struct{}{}:
	case <-cl.quit:
		return
	}
	n := cl.reserve()
	ref := f.Ref
	if len(f.Event) == 0 || string(f.Event) == "null" {
		cl.reply(n, errorFrame(ref, badRequest("event is required in a send frame")))
		return
	}
	in, e := cl.c.parseEvent(f.Event, "event")
	if e == nil {
		e = cl.c.storeInbound(in)
	}
	if e != nil {
		cl.reply(n, errorFrame(ref, e))
		return
	}
	id := in.ev.ID
	cl.c.sink.Submit(in.ev, func(err error) {
		if err != nil {
			cl.reply(n, errorFrame(ref, submitError(err)))
			return
		}
		cl.reply(n, mustJSON(replyFrame{Type: "ack", Ref: ref, ID: id}))
	})
}

func (cl *client) reserve() uint64 {
	cl.rmu.Lock()
	defer cl.rmu.Unlock()
	n := cl.nextReply
	cl.nextReply++
	return n
}

// reply fills reply slot n and sends every reply that is now next in line.
// It may run on the store's completion goroutine, so it never blocks.
func (cl *client) reply(n uint64, frame []byte) {
	cl.rmu.Lock()
	defer cl.rmu.Unlock()
	cl.ready[n] = frame
	for {
		f, ok := cl.ready[cl.headReply]
		if !ok {
			return
		}
		delete(cl.ready, cl.headReply)
		cl.headReply++
		<-cl.inflight
		cl.push(f)
	}
}

// subscribeFailed undoes a subscription whose log could not be read and
// tells the client to try again.
func (cl *client) subscribeFailed(ref, chat string, err error) {
	cl.c.hub.unsubscribe(cl, chat)
	cl.c.log.Error("could not read an API chat's log", "chat", chat, "err", err)
	cl.pushWait(errorFrame(ref, &apiError{http.StatusServiceUnavailable, codeUnavailable, "could not read the chat's log; subscribe again"}))
}

// handleSubscribe registers the subscription first, then replays the log,
// then goes live: a frame committed during the replay is either in the
// replay or held by the subscription, and goLive drops the ones the
// replay covered, so there is no gap and no duplicate.
func (cl *client) handleSubscribe(f *clientFrame) {
	c := cl.c
	if f.Chat == "" {
		cl.pushWait(errorFrame(f.Ref, badRequest("chat is required")))
		return
	}
	if f.Since != nil && *f.Since < 0 {
		cl.pushWait(errorFrame(f.Ref, badRequest("since must be 0 or more (got %d)", *f.Since)))
		return
	}
	chat := f.Chat
	sub := c.hub.subscribe(cl, chat)
	latest, err := c.events.latest(cl.ctx, chat)
	if err != nil {
		cl.subscribeFailed(f.Ref, chat, err)
		return
	}
	// Nothing waits on a backoff for the API today (Send only logs), but a
	// subscriber arriving is exactly what Resume means.
	c.sink.Resume(chat)
	from, truncated := latest, false
	if f.Since != nil {
		from = *f.Since
		floor, err := c.events.replayFloor(cl.ctx, chat)
		if err != nil {
			cl.subscribeFailed(f.Ref, chat, err)
			return
		}
		if from < floor {
			from, truncated = floor, true
		}
	}
	seq := latest
	if !cl.pushWait(mustJSON(replyFrame{Type: "subscribed", Ref: f.Ref, Chat: chat, Seq: &seq, Truncated: truncated})) {
		return
	}
	for from < latest {
		page, err := c.events.page(cl.ctx, chat, from, latest, replayPage)
		if err != nil {
			cl.subscribeFailed(f.Ref, chat, err)
			return
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if !cl.pushWait(eventFrameBytes(chat, e.seq, e.payload)) {
				return
			}
		}
		from = page[len(page)-1].seq
	}
	sub.goLive(latest)
}
