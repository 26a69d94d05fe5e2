package matrix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

func init() {
	bridge.Register(bridge.ConnectorType{
		Name:       "matrix",
		NewOptions: func() any { return NewOptions() },
		New: func(env bridge.Env, options any) (bridge.Connector, error) {
			o, ok := options.(*Options)
			if !ok {
				return nil, fmt.Errorf("matrix connector %q: options are %T, not *matrix.Options", env.Name, options)
			}
			return New(env, o)
		},
	})
}

// Connector is one matrix connector: in bot mode a normal account that
// relays the rooms the routes name; in appservice mode (as set) a bot and
// ghosts in portal rooms, one per origin chat (asmode.go).
type Connector struct {
	name  string
	env   bridge.Env
	log   *slog.Logger
	opts  Options
	store *bridge.Store
	self  id.UserID

	// timelineLimit is how many timeline events one /sync carries per
	// room; gaps beyond it are read back with /messages.
	timelineLimit int

	mu   sync.Mutex
	cli  *mautrix.Client // nil until logged in
	sink bridge.Sink
	// routed are the chats the routes name (room ids or aliases).
	routed []string
	// joined are the rooms the bot is in, as far as it knows.
	joined map[id.RoomID]bool
	// aliases caches resolved room aliases.
	aliases map[string]id.RoomID
	// unjoinable are routed chats the bot could not join, reported once
	// and not retried until an invite or a change of routes.
	unjoinable map[string]bool
	// removed are rooms the bot was kicked or banned from, reported once
	// until it is back.
	removed map[id.RoomID]bool
	// warned are one-time warnings already given (encrypted rooms).
	warned map[string]bool

	rooms  roomCache
	typing map[id.RoomID]map[id.UserID]bool
	guard  *txnGuard

	// Appservice mode: as is set by Start; srv serves the homeserver;
	// refused are room+user pairs told they are not allowed.
	as      *asBridge
	srv     *asServer
	refused map[string]bool
	mgmt    management
	// mirror holds, per origin connector, the chats whose portals are
	// to be made (MirrorChats); mirrorKick wakes mirrorLoop.
	mirror     map[string][]bridge.ChatInfo
	mirrorKick chan struct{}
	// refresh holds the portals and ghosts whose origin said they
	// changed, updated in the background (asmode.go).
	refresh refreshQueue

	// sinceSaved is when the sync loop last saved its position;
	// syncSeen are the rooms whose joins it has seen (bot.go). Only the
	// sync loop touches them.
	sinceSaved time.Time
	syncSeen   map[id.RoomID]bool

	joinKick chan struct{}
	ctx      context.Context // lives from Start to Stop
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	// retiredMu: one tellRetired at a time, so a room is told once.
	retiredMu sync.Mutex
}

var (
	_ bridge.Connector     = (*Connector)(nil)
	_ bridge.MediaOpener   = (*Connector)(nil)
	_ bridge.RouteWatcher  = (*Connector)(nil)
	_ bridge.ChatResolver  = (*Connector)(nil)
	_ bridge.ChatIDChecker = (*Connector)(nil)
	_ bridge.ChatLister    = (*Connector)(nil)
	_ bridge.LinkConsole   = (*Connector)(nil)
)

// defaultTimelineLimit keeps one /sync response small while a gap stays
// rare; gaps are read back anyway.
const defaultTimelineLimit = 100

// New builds a matrix connector; nothing is contacted until Start.
func New(env bridge.Env, opts *Options) (*Connector, error) {
	if opts == nil {
		return nil, fmt.Errorf("matrix connector %s: no options", env.Name)
	}
	if opts.Mode != ModeBot && opts.Mode != ModeAppservice {
		return nil, fmt.Errorf("matrix connector %s: mode %q is not bot or appservice", env.Name, opts.Mode)
	}
	if env.Store == nil {
		return nil, fmt.Errorf("matrix connector %s needs the bridge's store", env.Name)
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Connector{
		name:          env.Name,
		env:           env,
		refused:       map[string]bool{},
		log:           log,
		opts:          *opts,
		store:         env.Store,
		self:          id.UserID(opts.UserID),
		timelineLimit: defaultTimelineLimit,
		joined:        map[id.RoomID]bool{},
		syncSeen:      map[id.RoomID]bool{},
		aliases:       map[string]id.RoomID{},
		unjoinable:    map[string]bool{},
		removed:       map[id.RoomID]bool{},
		warned:        map[string]bool{},
		rooms:         newRoomCache(),
		typing:        map[id.RoomID]map[id.UserID]bool{},
		guard:         newTxnGuard(),
		joinKick:      make(chan struct{}, 1),
		mirror:        map[string][]bridge.ChatInfo{},
		mirrorKick:    make(chan struct{}, 1),
		mgmt:          management{rooms: map[id.RoomID]bool{}, linking: map[id.RoomID]context.CancelFunc{}},
	}, nil
}

// maxTextRunes keeps a relayed text, at 4 bytes a rune in the worst case,
// under Matrix's 64 KiB event limit; send drops the HTML copy where both
// would not fit.
const maxTextRunes = 15000

// Capabilities implements bridge.Connector.
func (c *Connector) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{
		Edits: true, Deletes: true, Reactions: true, Replies: true, Media: true,
		Polls: true, HTML: true, Typing: true, Read: true,
		// m.location, which clients draw on a map.
		Locations: true,
		// Only an appservice may date an event in the past.
		History:       c.opts.Mode == ModeAppservice,
		MaxTextLength: maxTextRunes,
	}
}

// Start implements bridge.Connector. It logs in once within ctx: bad
// credentials fail it; an unreachable homeserver does not, and the
// connector keeps trying in the background.
func (c *Connector) Start(ctx context.Context, sink bridge.Sink) error {
	if c.opts.Mode == ModeAppservice {
		return c.startAppservice(ctx, sink)
	}
	if err := c.store.Migrate(ctx, "matrix_bot", migrations); err != nil {
		return err
	}
	c.mu.Lock()
	c.sink = sink
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.Unlock()

	sink.SetState(bridge.StateConnecting, "logging in to "+c.opts.Homeserver+" as "+c.opts.UserID)
	cli, err := c.login(ctx)
	var fatal *fatalError
	if errors.As(err, &fatal) {
		c.cancel()
		return err
	}
	if err != nil {
		c.log.Warn("cannot log in to the homeserver yet; retrying in the background", "homeserver", c.opts.Homeserver, "err", err)
		sink.SetState(bridge.StateDisconnected, "cannot reach "+c.opts.Homeserver+": "+oneLine(err))
	} else {
		c.mu.Lock()
		c.cli = cli
		c.mu.Unlock()
	}
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.run(cli)
	}()
	go func() {
		defer c.wg.Done()
		c.joinLoop()
	}()
	return nil
}

// Stop implements bridge.Connector: the sync loop and joiner end, and an
// in-flight /sync is cancelled. The device stays logged in for next time.
func (c *Connector) Stop(ctx context.Context) error {
	c.mu.Lock()
	cancel := c.cancel
	if cancel != nil {
		// Under mu: DescriptionChanged starts no goroutine once this ran,
		// so none is added to wg while Stop waits on it.
		cancel()
	}
	c.mu.Unlock()
	if cancel == nil {
		return nil
	}
	var srvErr error
	if c.srv != nil {
		// Transactions in flight finish first: their events reach the core.
		srvErr = c.srv.stop(ctx)
	}
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		if srvErr != nil {
			return fmt.Errorf("matrix connector %s: stop the appservice API: %w", c.name, srvErr)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("matrix connector %s did not stop in time: %w", c.name, ctx.Err())
	}
}

// client is the logged-in client, or nil.
func (c *Connector) client() *mautrix.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cli
}

// errNotLoggedIn is transient: deliveries wait until the login succeeds.
var errNotLoggedIn = errors.New("not logged in to the homeserver yet")

// Send implements bridge.Connector.
func (c *Connector) Send(ctx context.Context, out *bridge.Outgoing) (string, error) {
	if c.opts.Mode == ModeAppservice {
		c.mu.Lock()
		as := c.as
		c.mu.Unlock()
		if as == nil {
			return "", errors.New("the appservice has not started yet")
		}
		return c.asSend(ctx, out)
	}
	cli := c.client()
	if cli == nil {
		return "", errNotLoggedIn
	}
	room, err := c.roomOf(ctx, out.Chat.ID)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	removed, wasJoined := c.removed[room], c.joined[room]
	c.mu.Unlock()
	if removed {
		// Reported already; an invite clears it.
		return "", bridge.Permanentf("the bot was removed from room %s; invite it back", room)
	}
	s := &roomSender{cli: cli, room: room, self: c.self, guard: c.guard, senderFormat: c.opts.SenderFormat, maxMediaBytes: c.opts.MaxMediaBytes, pill: matrixUser}
	native, err := s.send(ctx, out)
	if err == nil || !errors.Is(err, mautrix.MForbidden) {
		return native, err
	}
	c.mu.Lock()
	unjoinable := c.unjoinable[out.Chat.ID] || c.unjoinable[string(room)]
	c.mu.Unlock()
	joinable := c.isRouted(room) && !unjoinable
	if joinable && !wasJoined {
		// Not known to be joined yet (at start the joiner races the first
		// delivery; it may even have joined since the refusal): join, and
		// retry this then. A join the homeserver refuses marks the room
		// unjoinable.
		c.kickJoiner()
		return "", fmt.Errorf("the bot is not in room %s yet; joining it first", room)
	}
	if c.notInRoom(ctx, cli, room) {
		if joinable {
			// Left without the bot seeing it: join again, then retry.
			c.kickJoiner()
			return "", fmt.Errorf("the bot is not in room %s; joining it again first", room)
		}
		c.reportRemoved(room, fmt.Sprintf("matrix connector %s: the bot %s is not in room %s, so events for it are dropped; invite it back", c.name, c.self, room))
		return "", bridge.Permanentf("the bot is not in room %s: %v", room, err)
	}
	return native, err
}

// roomOf turns a chat id from the routes (a room id, or an alias) into
// a room id.
func (c *Connector) roomOf(ctx context.Context, chat string) (id.RoomID, error) {
	switch {
	case strings.HasPrefix(chat, "!"):
		return id.RoomID(chat), nil
	case strings.HasPrefix(chat, "#"):
		return c.resolveAlias(ctx, chat)
	}
	return "", bridge.Permanentf("%q is neither a Matrix room id (!abc:example.org) nor an alias (#room:example.org)", chat)
}

// notInRoom asks the homeserver whether the bot is out of room; on doubt
// it says no, so the error stays the server's.
func (c *Connector) notInRoom(ctx context.Context, cli *mautrix.Client, room id.RoomID) bool {
	resp, err := cli.JoinedRooms(ctx)
	if err != nil {
		return false
	}
	in := slices.Contains(resp.JoinedRooms, room)
	c.mu.Lock()
	c.joined[room] = in
	c.mu.Unlock()
	return !in
}

// reportRemoved tells the operator, once until the bot is back in room,
// that events for it cannot be delivered.
func (c *Connector) reportRemoved(room id.RoomID, text string) {
	c.mu.Lock()
	seen := c.removed[room]
	c.removed[room] = true
	c.joined[room] = false
	c.mu.Unlock()
	if !seen {
		c.warn(text)
	}
}

// warnOnce logs text and posts it as a notice the first time key is seen.
func (c *Connector) warnOnce(key, text string) {
	c.mu.Lock()
	seen := c.warned[key]
	c.warned[key] = true
	c.mu.Unlock()
	if !seen {
		c.warn(text)
	}
}

// warn logs text and posts it as a notice.
func (c *Connector) warn(text string) {
	c.mu.Lock()
	sink := c.sink
	c.mu.Unlock()
	c.log.Warn(text)
	if sink != nil {
		sink.Notice(text)
	}
}

// RoutedChats implements bridge.RouteWatcher: the joiner joins them.
func (c *Connector) RoutedChats(chats []string) {
	c.mu.Lock()
	if !slices.Equal(c.routed, chats) {
		// A change of routes is the operator's answer to a failed join.
		c.unjoinable = map[string]bool{}
	}
	c.routed = slices.Clone(chats)
	c.mu.Unlock()
	c.kickJoiner()
}

func (c *Connector) kickJoiner() {
	select {
	case c.joinKick <- struct{}{}:
	default:
	}
}

// isRouted reports whether events of room matter to some route.
func (c *Connector) isRouted(room id.RoomID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, chat := range c.routed {
		if chat == string(room) || c.aliases[chat] == room {
			return true
		}
	}
	return false
}

// IsChatID implements bridge.ChatIDChecker: Matrix room ids in bot mode;
// in appservice mode every id, since a portal is made for any origin chat.
func (c *Connector) IsChatID(chat string) bool {
	if c.opts.Mode == ModeAppservice {
		return true
	}
	return strings.HasPrefix(chat, "!") && strings.Contains(chat, ":")
}

// ResolveChat implements bridge.ChatResolver: routes may name a room by
// alias; the core needs its id, which is what events carry.
func (c *Connector) ResolveChat(ctx context.Context, nameOrID string) (string, error) {
	switch {
	case strings.HasPrefix(nameOrID, "!"):
		return nameOrID, nil
	case strings.HasPrefix(nameOrID, "#"):
		room, err := c.resolveAlias(ctx, nameOrID)
		if err != nil {
			return "", err
		}
		return string(room), nil
	}
	return "", fmt.Errorf("%q is neither a Matrix room id (!abc:example.org) nor an alias (#room:example.org)", nameOrID)
}

// resolveAlias looks alias up in the room directory, which needs no
// login; an unreachable homeserver leaves it for later.
func (c *Connector) resolveAlias(ctx context.Context, alias string) (id.RoomID, error) {
	c.mu.Lock()
	room, ok := c.aliases[alias]
	c.mu.Unlock()
	if ok {
		return room, nil
	}
	cli := c.client()
	if cli == nil {
		var err error
		if cli, err = c.newClient(""); err != nil {
			return "", err
		}
	}
	resp, err := cli.ResolveAlias(ctx, id.RoomAlias(alias))
	if err != nil {
		if isDefinite(err) {
			return "", bridge.Permanentf("room alias %s does not resolve on %s: %v", alias, c.opts.Homeserver, oneLine(err))
		}
		return "", fmt.Errorf("%w: cannot reach %s to resolve %s: %v", bridge.ErrChatListUnavailable, c.opts.Homeserver, alias, oneLine(err))
	}
	c.mu.Lock()
	c.aliases[alias] = resp.RoomID
	c.mu.Unlock()
	return resp.RoomID, nil
}

// Chats implements bridge.ChatLister: the rooms the bot is in.
func (c *Connector) Chats(ctx context.Context, search string) ([]bridge.ChatInfo, error) {
	cli := c.client()
	if cli == nil {
		return nil, fmt.Errorf("%w: %v", bridge.ErrChatListUnavailable, errNotLoggedIn)
	}
	resp, err := cli.JoinedRooms(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the bot's rooms: %w", err)
	}
	var out []bridge.ChatInfo
	search = strings.ToLower(search)
	for _, room := range resp.JoinedRooms {
		name := c.rooms.roomName(ctx, cli, room)
		if search != "" && !strings.Contains(strings.ToLower(name), search) && !strings.Contains(strings.ToLower(string(room)), search) {
			continue
		}
		out = append(out, bridge.ChatInfo{ID: string(room), Name: name, Group: true})
	}
	return out, nil
}

// OpenMedia implements bridge.MediaOpener for attachments from Matrix.
func (c *Connector) OpenMedia(ctx context.Context, m bridge.Media) (io.ReadCloser, error) {
	cli := c.client()
	if cli == nil {
		return nil, errNotLoggedIn
	}
	return openMXC(ctx, cli, m.Ref, c.opts.MaxMediaBytes)
}

// newClient makes a client for the configured homeserver with token.
// Requests are bounded by their contexts, not by the HTTP client, since a
// /sync long-poll lasts sync_timeout.
func (c *Connector) newClient(token string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(c.opts.Homeserver, c.self, token)
	if err != nil {
		return nil, &fatalError{fmt.Errorf("matrix connector %s: homeserver %q: %w", c.name, c.opts.Homeserver, err)}
	}
	cli.Client = &http.Client{}
	cli.UserAgent = "phonebridge"
	return cli, nil
}

// fatalError is a start-up failure retrying cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }
