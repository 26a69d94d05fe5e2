package matrix

// Appservice mode's plumbing, for the Connector to wire in Start:
//
//	reg, stale, err := loadRegistration(name, opts, path) // registration.go; stale: log "run phonebridge matrix registration"
//	as, err := newASBridge(ctx, env, opts, reg)           // tables migrated, intents ready
//	srv := as.newServer(handleTxn)                        // handleTxn(ctx, txnID, events) error: nil = applied
//	err = srv.start()                                     // listens on opts.Listen; srv.stop(ctx) in Stop
//
// Then, per event: as.ensurePortal / as.portalRoom / as.portalOrigin /
// as.setPortalName (portals.go); as.ghostID / as.ensureGhost /
// as.joinGhost / as.ghostLeft / as.intent / as.botIntent (ghosts.go);
// as.allowed / as.isBridgeUser (permissions.go).
//
// handleTxn gets every event of a transaction, the bridge's own (echoes of
// what the bot and ghosts sent) included, and must be idempotent per
// event id: a transaction whose handling succeeded but whose recording
// failed is delivered again. Submitting with the Matrix event id as
// Event.ID gives that through the core's native-id map.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// asComponent names appservice mode's tables in schema_versions.
const asComponent = "matrix-appservice"

// asMigrations: matrix_as_txns remembers applied transactions so a
// homeserver's retry is not applied twice; matrix_portals maps origin
// chats to the rooms made for them; matrix_ghosts remembers registered
// ghosts and the display name last set; matrix_ghost_rooms the rooms each
// ghost has joined. Every table is keyed by connector name, as several
// matrix connectors may share the database.
var asMigrations = []string{
	`CREATE TABLE matrix_as_txns (
		connector TEXT NOT NULL,
		txn_id    TEXT NOT NULL,
		done_at   INTEGER NOT NULL,
		PRIMARY KEY (connector, txn_id)
	) WITHOUT ROWID;
	CREATE INDEX matrix_as_txns_done ON matrix_as_txns (connector, done_at);
	CREATE TABLE matrix_portals (
		connector        TEXT NOT NULL,
		origin_connector TEXT NOT NULL,
		origin_chat      TEXT NOT NULL,
		room_id          TEXT NOT NULL,
		name             TEXT NOT NULL,
		direct           INTEGER NOT NULL,
		PRIMARY KEY (connector, origin_connector, origin_chat)
	) WITHOUT ROWID;
	CREATE UNIQUE INDEX matrix_portals_room ON matrix_portals (connector, room_id);
	CREATE TABLE matrix_ghosts (
		connector    TEXT NOT NULL,
		user_id      TEXT NOT NULL,
		display_name TEXT NOT NULL,
		PRIMARY KEY (connector, user_id)
	) WITHOUT ROWID;
	CREATE TABLE matrix_ghost_rooms (
		connector TEXT NOT NULL,
		user_id   TEXT NOT NULL,
		room_id   TEXT NOT NULL,
		PRIMARY KEY (connector, user_id, room_id)
	) WITHOUT ROWID;`,
	managementMigration,
	// What a portal and a ghost last showed of their origin, so each
	// change is sent once.
	`ALTER TABLE matrix_portals ADD COLUMN topic TEXT NOT NULL DEFAULT '';
	ALTER TABLE matrix_portals ADD COLUMN avatar_id TEXT NOT NULL DEFAULT '';
	ALTER TABLE matrix_ghosts ADD COLUMN avatar_id TEXT NOT NULL DEFAULT '';`,
	// Portals being created: a row left here by a crash says a room for
	// the chat may exist unrecorded, to be found before making another.
	// A transaction is recognised by its id and its body's digest:
	// Dendrite names a transaction after its first event's queue time, so
	// a redelivered event batched with new ones comes under an old id.
	`CREATE TABLE matrix_as_txns_v2 (
		connector TEXT NOT NULL,
		txn_id    TEXT NOT NULL,
		digest    TEXT NOT NULL,
		done_at   INTEGER NOT NULL,
		PRIMARY KEY (connector, txn_id, digest)
	) WITHOUT ROWID;
	INSERT INTO matrix_as_txns_v2 (connector, txn_id, digest, done_at) SELECT connector, txn_id, '', done_at FROM matrix_as_txns;
	DROP TABLE matrix_as_txns;
	ALTER TABLE matrix_as_txns_v2 RENAME TO matrix_as_txns;
	CREATE INDEX matrix_as_txns_done ON matrix_as_txns (connector, done_at);`,
	`CREATE TABLE matrix_portals_pending (
		connector        TEXT NOT NULL,
		origin_connector TEXT NOT NULL,
		origin_chat      TEXT NOT NULL,
		PRIMARY KEY (connector, origin_connector, origin_chat)
	) WITHOUT ROWID;`,
	retiredTable,
}

// asBridge is appservice mode's state: the registration, the store, and
// the clients that act as the bot and the ghosts.
type asBridge struct {
	name  string
	opts  *Options
	reg   *appservice.Registration
	store *bridge.Store
	log   *slog.Logger
	bot   id.UserID
	owner id.UserID
	http  *http.Client

	clientsMu sync.Mutex
	clients   map[id.UserID]*mautrix.Client

	// Per-chat and per-ghost locks, so concurrent deliveries for one chat
	// create one room and register a ghost once.
	portalLocks keyedMutex
	ghostLocks  keyedMutex

	roomVersionMu sync.Mutex
	roomVersion   id.RoomVersion // the homeserver's default, once known

	// described says when to ask origins again about portals' chats and
	// ghosts' senders (asmode.go).
	described describedSet
}

// newASBridge migrates appservice mode's tables and returns its state.
func newASBridge(ctx context.Context, env bridge.Env, o *Options, reg *appservice.Registration) (*asBridge, error) {
	if err := env.Store.Migrate(ctx, asComponent, asMigrations); err != nil {
		return nil, err
	}
	if _, err := mautrix.ParseAndNormalizeBaseURL(o.Homeserver); err != nil {
		return nil, fmt.Errorf("homeserver %q: %w", o.Homeserver, err)
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &asBridge{
		name:    env.Name,
		opts:    o,
		reg:     reg,
		store:   env.Store,
		log:     log,
		bot:     id.NewUserID(reg.SenderLocalpart, o.Domain),
		owner:   id.UserID(o.Owner),
		http:    &http.Client{Timeout: 2 * time.Minute},
		clients: map[id.UserID]*mautrix.Client{},
	}, nil
}

// txnHandler applies one transaction's events, its ephemeral ones (typing,
// receipts; Type.Class EphemeralEventType) last; nil means applied, so the
// transaction is recorded and acknowledged. An error makes the homeserver
// send the transaction again.
type txnHandler func(ctx context.Context, txnID string, events []*event.Event) error

// maxTxnBytes bounds a transaction's body. Synapse sends at most 100
// events and 100 ephemeral ones, each at most 64 KiB.
const maxTxnBytes = 16 << 20

// txnKeep is how long an applied transaction id is remembered: far longer
// than any homeserver keeps retrying one.
const txnKeep = 30 * 24 * time.Hour

// msgTxnWaits is logged when a transaction arrives while another is
// being applied (usually a retry of a slow one).
const msgTxnWaits = "a transaction waits for the one being applied"

// pruneEvery: every so many recorded transactions, old ones are pruned.
const pruneEvery = 256

// asServer is the appservice API the homeserver pushes to.
type asServer struct {
	b        *asBridge
	handle   txnHandler
	tokenSum [32]byte

	srv       *http.Server
	ln        net.Listener
	serveDone chan struct{}
	cancel    context.CancelFunc // ends in-flight handlers when stop runs out of time
	stopOnce  sync.Once
	stopErr   error

	// txn is held while a transaction is applied: the homeserver sends
	// them one at a time, and a retry racing its slow original must find
	// it recorded rather than apply it again.
	txn      chan struct{}
	recorded int // guarded by txn
}

func (b *asBridge) newServer(handle txnHandler) *asServer {
	s := &asServer{
		b:        b,
		handle:   handle,
		tokenSum: sha256.Sum256([]byte(b.reg.ServerToken)),
		txn:      make(chan struct{}, 1),
	}
	mux := http.NewServeMux()
	for _, prefix := range []string{"/_matrix/app/v1", ""} { // "" is the legacy unprefixed API
		mux.HandleFunc("PUT "+prefix+"/transactions/{txnId}", s.transaction)
		mux.HandleFunc("GET "+prefix+"/users/{userId}", s.userQuery)
		mux.HandleFunc("GET "+prefix+"/rooms/{alias}", s.aliasQuery)
	}
	mux.HandleFunc("POST /_matrix/app/v1/ping", func(w http.ResponseWriter, r *http.Request) {
		asWriteJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		asWriteError(w, http.StatusNotFound, "M_UNRECOGNIZED", "unknown endpoint")
	})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.srv = &http.Server{
		Handler:           s.authorized(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	return s
}

// start listens on the options' listen address and serves until stop.
func (s *asServer) start() error {
	ln, err := net.Listen("tcp", s.b.opts.Listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen on %s for the homeserver: address already in use — set connectors.%s.listen to a free address (and url, then rerun `phonebridge matrix registration %s`)", s.b.opts.Listen, s.b.name, s.b.name)
		}
		return fmt.Errorf("listen on %s for the homeserver: %w", s.b.opts.Listen, err)
	}
	s.ln = ln
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.b.log.Error("the appservice API stopped serving", "err", err)
		}
	}()
	return nil
}

// addr is where the server listens, once started.
func (s *asServer) addr() net.Addr { return s.ln.Addr() }

// stop closes the listener and waits for requests in flight, within ctx;
// past it they are cut off (the homeserver retries what was not answered).
// Calls after the first return its result.
func (s *asServer) stop(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	s.stopOnce.Do(func() {
		s.stopErr = s.srv.Shutdown(ctx)
		if s.stopErr != nil {
			s.cancel()
			s.srv.Close()
		}
		<-s.serveDone
		s.cancel()
	})
	return s.stopErr
}

// authorized checks the hs_token, from the Authorization header or the
// legacy access_token parameter. Digests are compared, so neither the
// time taken nor a length check says anything about the token.
func (s *asServer) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var token string
		if h := r.Header.Get("Authorization"); h != "" {
			if scheme, rest, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
				token = strings.TrimSpace(rest)
			}
		} else {
			token = r.URL.Query().Get("access_token")
		}
		if token == "" {
			asWriteError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", "missing hs_token")
			return
		}
		sum := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
			// The path only: a legacy query string carries the token.
			s.b.log.Warn("the appservice API refused a request with a wrong hs_token: is the homeserver's copy of the registration current?", "path", r.URL.Path, "remote", r.RemoteAddr)
			asWriteError(w, http.StatusForbidden, "M_FORBIDDEN", "wrong hs_token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *asServer) transaction(w http.ResponseWriter, r *http.Request) {
	txnID := r.PathValue("txnId")
	if r.ContentLength > maxTxnBytes {
		asWriteError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "transaction body too large")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTxnBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			asWriteError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "transaction body too large")
		} else {
			asWriteError(w, http.StatusBadRequest, "M_BAD_JSON", "could not read the body")
		}
		return
	}
	var txn struct {
		Events    []*event.Event `json:"events"`
		Ephemeral []*event.Event `json:"ephemeral"`
		// Homeservers from before MSC2409 was stable use this key.
		UnstableEphemeral []*event.Event `json:"de.sorunome.msc2409.ephemeral"`
	}
	if err := json.Unmarshal(body, &txn); err != nil {
		asWriteError(w, http.StatusBadRequest, "M_BAD_JSON", "the body is not a transaction: "+err.Error())
		return
	}
	for _, evt := range txn.Events {
		if evt == nil {
			asWriteError(w, http.StatusBadRequest, "M_BAD_JSON", "null event in the transaction")
			return
		}
		prepareTxnEvent(evt)
	}
	ephemeral := txn.Ephemeral
	if ephemeral == nil {
		ephemeral = txn.UnstableEphemeral
	}
	for _, evt := range ephemeral {
		if evt == nil || evt.RoomID == "" {
			continue // presence and the like: nothing to relay
		}
		evt.Type.Class = event.EphemeralEventType
		_ = evt.Content.ParseRaw(evt.Type)
		txn.Events = append(txn.Events, evt)
	}

	if onlyEchoes(s.b, txn.Events) {
		// The bridge's own messages coming back (most transactions while
		// relaying to Matrix): nothing to apply, so nothing to record, and
		// a retry is as harmless. Recording them cost a commit a message.
		asWriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	ctx := r.Context()
	select {
	case s.txn <- struct{}{}:
	default:
		s.b.log.Debug(msgTxnWaits, "txn", txnID)
		select {
		case s.txn <- struct{}{}:
		case <-ctx.Done():
			return // the homeserver left; it sends the transaction again
		}
	}
	defer func() { <-s.txn }()

	digest := txnDigest(body)
	done, err := s.txnDone(ctx, txnID, digest)
	if err != nil {
		s.b.log.Error("the appservice API could not read its transaction log", "txn", txnID, "err", err)
		asWriteError(w, http.StatusInternalServerError, "M_UNKNOWN", "transaction log unreadable")
		return
	}
	if done {
		asWriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	if err := s.handle(ctx, txnID, txn.Events); err != nil {
		s.b.log.Warn("a transaction from the homeserver was not applied; it will be sent again", "txn", txnID, "events", len(txn.Events), "err", err)
		asWriteError(w, http.StatusInternalServerError, "M_UNKNOWN", "not applied; send again")
		return
	}
	if err := s.recordTxn(ctx, txnID, digest); err != nil {
		// Applied but not recorded: the retry is applied again, which the
		// handler's idempotency per event id absorbs.
		s.b.log.Error("a transaction was applied but could not be recorded", "txn", txnID, "err", err)
		asWriteError(w, http.StatusInternalServerError, "M_UNKNOWN", "not recorded; send again")
		return
	}
	asWriteJSON(w, http.StatusOK, struct{}{})
}

// prepareTxnEvent sets the type class the JSON leaves out and parses the
// content where mautrix knows the type; unknown types keep raw content.
func prepareTxnEvent(evt *event.Event) {
	if evt.StateKey != nil {
		evt.Type.Class = event.StateEventType
	} else {
		evt.Type.Class = event.MessageEventType
	}
	_ = evt.Content.ParseRaw(evt.Type)
}

// txnDone reports whether the transaction txnID with this body was
// applied already. The same id with another body is a new transaction.
func (s *asServer) txnDone(ctx context.Context, txnID, digest string) (bool, error) {
	// A row from before digests were kept ('') counts as the same body.
	var one int
	err := s.b.store.QueryRowContext(ctx, `SELECT 1 FROM matrix_as_txns WHERE connector = ? AND txn_id = ? AND digest IN (?, '')`,
		s.b.name, txnID, digest).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// onlyEchoes says whether events are all messages the bridge's own users
// sent, which handling skips (handleTxn): state and ephemeral events are
// followed whoever sends them.
func onlyEchoes(b *asBridge, events []*event.Event) bool {
	for _, evt := range events {
		if evt.StateKey != nil || evt.Type.Class == event.EphemeralEventType || !b.isBridgeUser(evt.Sender) {
			return false
		}
	}
	return true
}

// txnDigest identifies a transaction's body.
func txnDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:16])
}

// recordTxn marks txnID with this body applied; the caller holds s.txn.
func (s *asServer) recordTxn(ctx context.Context, txnID, digest string) error {
	now := time.Now()
	s.recorded++
	prune := s.recorded%pruneEvery == 0
	return s.b.store.Write(ctx, func(tx *bridge.Tx) error {
		if _, err := tx.Exec(`INSERT OR IGNORE INTO matrix_as_txns (connector, txn_id, digest, done_at) VALUES (?, ?, ?, ?)`,
			s.b.name, txnID, digest, now.UnixMilli()); err != nil {
			return err
		}
		if prune {
			_, err := tx.Exec(`DELETE FROM matrix_as_txns WHERE connector = ? AND done_at < ?`, s.b.name, now.Add(-txnKeep).UnixMilli())
			return err
		}
		return nil
	})
}

// userQuery answers whether a user in the bridge's namespace exists: the
// bot and every ghost do, as ghosts are registered when first used.
func (s *asServer) userQuery(w http.ResponseWriter, r *http.Request) {
	if u := id.UserID(r.PathValue("userId")); s.b.isBridgeUser(u) {
		asWriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	asWriteError(w, http.StatusNotFound, "M_NOT_FOUND", "not a user of this bridge")
}

// aliasQuery: the bridge claims no aliases.
func (s *asServer) aliasQuery(w http.ResponseWriter, r *http.Request) {
	asWriteError(w, http.StatusNotFound, "M_NOT_FOUND", "this bridge has no room aliases")
}

func asWriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func asWriteError(w http.ResponseWriter, status int, code, msg string) {
	asWriteJSON(w, status, map[string]string{"errcode": code, "error": msg})
}

// keyedMutex is a set of mutexes by key, made on demand and dropped when
// no one holds or waits for them.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{} // holds a token while locked
	refs int
}

// lock takes key's mutex, or fails when ctx ends first.
func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
