package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// Backend is what the daemon exposes to the control API.
type Backend interface {
	// LinkAdmin gives the links and their chats, by connector name.
	bridge.LinkAdmin
	// Version is the daemon's version string.
	Version() string
	// Status reports the daemon: connectors, links, the outbox.
	Status(ctx context.Context) (StatusReport, error)
	// Reload reads the config file again and applies it; a config with
	// problems is refused (a *config.Problems) and the running one stays.
	Reload(ctx context.Context) (ReloadReport, error)
}

const (
	// writeWait bounds one frame's write: a client that does not read
	// cannot hold a Linker's progress callback for long.
	writeWait = 10 * time.Second
	// closeGrace is how long a closing side waits for the other's close.
	closeGrace = 2 * time.Second
)

// Server serves the control API on a unix socket.
type Server struct {
	b     Backend
	log   *slog.Logger
	path  string
	ident os.FileInfo // the socket file we created
	lock  *os.File
	srv   *http.Server
	up    websocket.Upgrader

	// base is every request's context; Close cancels it, which ends
	// link streams (hijacked, so http.Server.Shutdown does not see them).
	base context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	closing bool
	streams sync.WaitGroup
	served  chan struct{}
}

// Listen creates the control socket at path (in the state_dir) and serves
// b on it. A stale socket is replaced; a live one means another daemon
// uses the state_dir, which is an error.
func Listen(path string, b Backend, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, ident, lock, err := listenSocket(path)
	if err != nil {
		return nil, err
	}
	s := &Server{b: b, log: log, path: path, ident: ident, lock: lock, served: make(chan struct{})}
	s.base, s.stop = context.WithCancel(context.Background())
	s.up = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			code := codeBadRequest
			if status == http.StatusMethodNotAllowed {
				code = codeMethodNotAllowed
			}
			writeError(w, status, code, reason.Error())
		},
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.route),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the control socket stopped serving", "err", err)
		}
	}()
	log.Debug("control socket listening", "path", path)
	return s, nil
}

// Close stops accepting, cancels running requests and link streams, waits
// for them within ctx and removes the socket file.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()

	s.stop()
	err := s.srv.Shutdown(ctx)
	<-s.served
	// Removed before the lock is released so a daemon starting next never
	// loses its new socket to us.
	removeSocket(s.path, s.ident)

	done := make(chan struct{})
	go func() { s.streams.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("link streams did not end in time: %w", ctx.Err())
		}
	}
	s.lock.Close()
	return err
}

// track counts a link stream for Close, unless closing already started.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.streams.Add(1)
	return true
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	// The escaped path, so a name may contain an escaped slash.
	path := r.URL.EscapedPath()
	if path != "/v1/version" && !s.sameProtocol(w, r) {
		return
	}
	switch {
	case path == "/v1/version":
		if allow(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, versionBody{Version: s.b.Version(), Protocol: Protocol})
		}
	case path == "/v1/links":
		if allow(w, r, http.MethodGet) {
			links := s.b.Links()
			if links == nil {
				links = []bridge.LinkStatus{}
			}
			writeJSON(w, http.StatusOK, map[string][]bridge.LinkStatus{"links": links})
		}
	case path == "/v1/status":
		if allow(w, r, http.MethodGet) {
			st, err := s.b.Status(r.Context())
			if err != nil {
				writeError(w, http.StatusInternalServerError, codeInternal, err.Error())
				return
			}
			writeJSON(w, http.StatusOK, st)
		}
	case path == "/v1/reload":
		if allow(w, r, http.MethodPost) {
			s.handleReload(w, r)
		}
	case strings.HasPrefix(path, "/v1/links/"):
		rawName, action, _ := strings.Cut(strings.TrimPrefix(path, "/v1/links/"), "/")
		name, err := url.PathUnescape(rawName)
		if err != nil || name == "" {
			notFound(w, path)
			return
		}
		switch action {
		case "chats":
			if allow(w, r, http.MethodGet) {
				s.handleChats(w, r, name)
			}
		case "unlink":
			if allow(w, r, http.MethodPost) {
				s.handleUnlink(w, r, name)
			}
		case "link":
			if allow(w, r, http.MethodGet) {
				s.handleLink(w, r, name)
			}
		case "backfill":
			if allow(w, r, http.MethodPost) {
				s.handleBackfill(w, r, name)
			}
		default:
			notFound(w, path)
		}
	default:
		notFound(w, path)
	}
}

// sameProtocol refuses a request from a client of another protocol
// version, saying which side to update.
func (s *Server) sameProtocol(w http.ResponseWriter, r *http.Request) bool {
	theirs, _ := strconv.Atoi(r.Header.Get(protocolHeader)) // none: 1, before versioning
	theirs = max(theirs, 1)
	if theirs == Protocol {
		return true
	}
	msg := fmt.Sprintf("this phonebridge command speaks control protocol %d, the running daemon (%s) speaks %d: run the command of the daemon's release", theirs, s.b.Version(), Protocol)
	if theirs > Protocol {
		msg = fmt.Sprintf("the running daemon (phonebridge %s) is older than this command (control protocol %d, the command speaks %d): restart it to run the installed phonebridge (systemctl restart phonebridge)", s.b.Version(), Protocol, theirs)
	}
	writeError(w, http.StatusBadRequest, codeProtocolMismatch, msg)
	return false
}

func notFound(w http.ResponseWriter, path string) {
	writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("unknown path %q; the control API's paths are under /v1", path))
}

func noLink(w http.ResponseWriter, name string) {
	writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no link called %q; `phonebridge links` lists them", name))
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed,
		fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, method))
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: oneLine(msg), Code: code})
}

// writeFailure answers with a connector's error: a LinkError keeps its
// reason in the code, so the client can rebuild it.
func (s *Server) writeFailure(w http.ResponseWriter, err error) {
	if s.base.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "phonebridge is stopping")
		return
	}
	var le *bridge.LinkError
	if !errors.As(err, &le) {
		writeError(w, http.StatusInternalServerError, codeInternal, err.Error())
		return
	}
	status := http.StatusInternalServerError
	switch le.Reason {
	case bridge.LinkAlreadyLinked, bridge.LinkBusy:
		status = http.StatusConflict
	case bridge.LinkNetworkDown:
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, errorBody{Error: oneLine(le.Error()), Code: string(le.Reason), Failure: wireFailure(le)})
}

func (s *Server) handleChats(w http.ResponseWriter, r *http.Request, name string) {
	lister, ok := s.b.ChatLister(name)
	if !ok {
		if _, ok := s.b.Linker(name); ok {
			writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("link %q cannot list its chats", name))
		} else {
			noLink(w, name)
		}
		return
	}
	chats, err := lister.Chats(r.Context(), r.URL.Query().Get("search"))
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	if chats == nil {
		chats = []bridge.ChatInfo{}
	}
	writeJSON(w, http.StatusOK, map[string][]bridge.ChatInfo{"chats": chats})
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	rep, err := s.b.Reload(r.Context())
	var problems *config.Problems
	switch {
	case errors.As(err, &problems):
		items := make([]string, len(problems.Items))
		for i, p := range problems.Items {
			items[i] = p.String()
		}
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{
			Error:    fmt.Sprintf("the config has %d problem(s); the running config stays", len(items)),
			Code:     codeBadConfig,
			Problems: items,
		})
	case err != nil && rep.Config == "":
		writeError(w, http.StatusInternalServerError, codeInternal, err.Error())
	default:
		// Applied, perhaps in part: the report says what, the error what failed.
		if err != nil {
			rep.Error = oneLine(err.Error())
		}
		writeJSON(w, http.StatusOK, rep)
	}
}

func (s *Server) handleUnlink(w http.ResponseWriter, r *http.Request, name string) {
	linker, ok := s.b.Linker(name)
	if !ok {
		noLink(w, name)
		return
	}
	local := false
	if v := r.URL.Query().Get("local"); v != "" {
		var err error
		if local, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("local is %q; use true or false", v))
			return
		}
	}
	if err := linker.Unlink(r.Context(), local); err != nil {
		s.writeFailure(w, err)
		return
	}
	s.log.Info("unlinked", "link", name, "local_only", local)
	writeJSON(w, http.StatusOK, map[string]string{"unlinked": name})
}

// handleBackfill asks the link for older messages of a chat (query chat,
// by id or name, and count).
func (s *Server) handleBackfill(w http.ResponseWriter, r *http.Request, name string) {
	linker, ok := s.b.Linker(name)
	if !ok {
		noLink(w, name)
		return
	}
	bf, ok := linker.(bridge.Backfiller)
	if !ok {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("link %q cannot ask for older messages", name))
		return
	}
	q := r.URL.Query()
	chat := q.Get("chat")
	count, err := strconv.Atoi(q.Get("count"))
	if chat == "" || err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("backfill needs a chat and a count (got chat %q, count %q)", chat, q.Get("count")))
		return
	}
	if err := bf.Backfill(r.Context(), chat, count); err != nil {
		writeError(w, http.StatusUnprocessableEntity, codeBadRequest, err.Error())
		return
	}
	s.log.Info("backfill asked", "link", name, "chat", chat, "count", count)
	writeJSON(w, http.StatusOK, map[string]any{"link": name, "chat": chat, "count": count})
}

// NormalizePhone accepts an international number written with the usual
// separators and returns it as "+digits", or an error saying how to write
// it. The CLI checks with it too when it links with no daemon.
func NormalizePhone(p string) (string, error) {
	bad := fmt.Errorf("phone %q is not an international number; write it like +15551234567", p)
	var b strings.Builder
	for i, c := range p {
		switch {
		case c == '+' && i == 0:
			b.WriteRune(c)
		case c >= '0' && c <= '9':
			b.WriteRune(c)
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')':
		default:
			return "", bad
		}
	}
	n := b.String()
	// E.164: a country code not starting with 0, at most 15 digits.
	if !strings.HasPrefix(n, "+") || len(n) < 8 || len(n) > 16 || n[1] == '0' {
		return "", bad
	}
	return n, nil
}

func (s *Server) handleLink(w http.ResponseWriter, r *http.Request, name string) {
	linker, ok := s.b.Linker(name)
	if !ok {
		noLink(w, name)
		return
	}
	var opts bridge.LinkOptions
	if p := r.URL.Query().Get("phone"); p != "" {
		var err error
		if opts.Phone, err = NormalizePhone(p); err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
			return
		}
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusBadRequest, codeBadRequest, "linking streams its progress: open this path as a websocket")
		return
	}
	if !s.track() {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "phonebridge is stopping")
		return
	}
	defer s.streams.Done()
	conn, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer conn.Close()
	st := &stream{conn: conn}
	// r.Context() derives from s.base, so Close cancels this too.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		st.read(cancel)
	}()

	how := "QR code"
	if opts.Phone != "" {
		how = "pairing code"
	}
	s.log.Info("linking", "link", name, "by", how)
	acct, err := linker.Link(ctx, opts, func(p bridge.LinkProgress) {
		if !st.send(frame{Type: frameProgress, Progress: &p}) {
			cancel() // nobody receives the codes: stop linking
		}
	})

	final := frame{Type: frameLinked, Account: &acct}
	closeCode, closeText := websocket.CloseNormalClosure, ""
	if err != nil {
		var le *bridge.LinkError
		switch {
		case s.base.Err() != nil:
			le = &bridge.LinkError{Reason: bridge.LinkShuttingDown}
			closeCode, closeText = websocket.CloseGoingAway, "phonebridge is stopping"
		case errors.As(err, &le):
		case ctx.Err() != nil:
			le = &bridge.LinkError{Reason: bridge.LinkCancelled}
		default:
			le = &bridge.LinkError{Reason: bridge.LinkFailed, Cause: err.Error()}
		}
		final = frame{Type: frameFailed, Failure: wireFailure(le)}
		if le.Reason == bridge.LinkCancelled || le.Reason == bridge.LinkShuttingDown {
			s.log.Info("linking cancelled", "link", name, "reason", string(le.Reason))
		} else {
			s.log.Warn("linking failed", "link", name, "reason", string(le.Reason), "cause", oneLine(le.Cause))
		}
	} else {
		s.log.Info("linked", "link", name, "account", acct.ID)
	}
	st.finish(final, closeCode, closeText)
	// The reader ends on the client's close or the deadline finish set.
	<-readerDone
}

// stream writes one link stream's frames; progress may come from any of
// the Linker's goroutines, and none after the final frame.
type stream struct {
	conn  *websocket.Conn
	mu    sync.Mutex
	ended bool
}

// send writes f and reports whether the client can still be written to.
func (st *stream) send(f frame) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ended {
		return false
	}
	st.conn.SetWriteDeadline(time.Now().Add(writeWait))
	if err := st.conn.WriteJSON(f); err != nil {
		st.ended = true
		return false
	}
	return true
}

// finish writes the final frame and the close, then gives the client
// closeGrace to answer the close.
func (st *stream) finish(f frame, code int, text string) {
	st.send(f)
	st.mu.Lock()
	st.ended = true
	st.mu.Unlock()
	st.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(writeWait))
	st.conn.SetReadDeadline(time.Now().Add(closeGrace))
}

// read cancels the link when the client asks to or goes away. The
// websocket library answers the client's close frame itself.
func (st *stream) read(cancel context.CancelFunc) {
	st.conn.SetReadLimit(4096)
	for {
		_, data, err := st.conn.ReadMessage()
		if err != nil {
			cancel()
			return
		}
		var f frame
		if json.Unmarshal(data, &f) == nil && f.Type == frameCancel {
			cancel()
		}
	}
}
