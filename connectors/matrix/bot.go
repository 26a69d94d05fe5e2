package matrix

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// The bot's own table: per connector, the session a password login made
// (reused at the next start, so the account does not collect a device per
// restart) and the /sync position, saved only once the events before it
// are committed.
var migrations = []string{
	`CREATE TABLE matrix_bot_sessions (
		connector    TEXT PRIMARY KEY,
		user_id      TEXT NOT NULL,
		device_id    TEXT NOT NULL DEFAULT '',
		access_token TEXT NOT NULL DEFAULT '',
		since        TEXT NOT NULL DEFAULT ''
	) WITHOUT ROWID;`,
}

type session struct {
	deviceID    id.DeviceID
	accessToken string
	since       string
}

// loadSession reads the connector's session; one made for another user
// is worth nothing and is ignored.
func (c *Connector) loadSession(ctx context.Context) (session, error) {
	var s session
	var user, device string
	err := c.store.QueryRowContext(ctx, `SELECT user_id, device_id, access_token, since FROM matrix_bot_sessions WHERE connector = ?`, c.name).
		Scan(&user, &device, &s.accessToken, &s.since)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && user != c.opts.UserID) {
		return session{}, nil
	}
	if err != nil {
		return session{}, fmt.Errorf("read the matrix session of %s: %w", c.name, err)
	}
	s.deviceID = id.DeviceID(device)
	return s, nil
}

// saveLogin records a password login's device and token; the sync
// position is kept only if the user is the same.
func (c *Connector) saveLogin(ctx context.Context, device id.DeviceID, token string) error {
	return c.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO matrix_bot_sessions (connector, user_id, device_id, access_token) VALUES (?, ?, ?, ?)
			ON CONFLICT (connector) DO UPDATE SET
				since = CASE WHEN user_id = excluded.user_id THEN since ELSE '' END,
				user_id = excluded.user_id, device_id = excluded.device_id, access_token = excluded.access_token`,
			c.name, c.opts.UserID, string(device), token)
		return err
	})
}

// saveSince records the /sync position.
func (c *Connector) saveSince(ctx context.Context, since string) error {
	return c.store.Write(ctx, c.sinceWrite(since))
}

func (c *Connector) sinceWrite(since string) func(tx *bridge.Tx) error {
	return func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO matrix_bot_sessions (connector, user_id, since) VALUES (?, ?, ?)
			ON CONFLICT (connector) DO UPDATE SET
				device_id = CASE WHEN user_id = excluded.user_id THEN device_id ELSE '' END,
				access_token = CASE WHEN user_id = excluded.user_id THEN access_token ELSE '' END,
				user_id = excluded.user_id, since = excluded.since`,
			c.name, c.opts.UserID, since)
		return err
	}
}

// loginTimeout bounds one login attempt.
const loginTimeout = 30 * time.Second

// login returns a client whose token is known good: the configured
// access token, or the saved session, or a new password login on the
// saved device. A *fatalError means the credentials are wrong.
func (c *Connector) login(ctx context.Context) (*mautrix.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	if c.opts.AccessToken != "" {
		cli, err := c.newClient(c.opts.AccessToken)
		if err != nil {
			return nil, err
		}
		if err := c.whoami(ctx, cli, "access_token"); err != nil {
			return nil, err
		}
		return cli, nil
	}
	sess, err := c.loadSession(ctx)
	if err != nil {
		return nil, err
	}
	if sess.accessToken != "" {
		cli, err := c.newClient(sess.accessToken)
		if err != nil {
			return nil, err
		}
		err = c.whoami(ctx, cli, "the saved session")
		if err == nil {
			return cli, nil
		}
		var fatal *fatalError
		if !errors.As(err, &fatal) {
			return nil, err
		}
		// The saved token was revoked: log in again on the same device.
		c.log.Info("the saved Matrix session is no longer valid; logging in again with the password", "user", c.opts.UserID, "device", sess.deviceID)
	}
	cli, err := c.newClient("")
	if err != nil {
		return nil, err
	}
	resp, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: c.opts.UserID},
		Password:                 c.opts.Password,
		DeviceID:                 sess.deviceID,
		InitialDeviceDisplayName: "phonebridge",
	})
	if err != nil {
		if isDefinite(err) {
			return nil, &fatalError{fmt.Errorf("matrix connector %s: %s refused the password login as %s: %s; check user_id and password", c.name, c.opts.Homeserver, c.opts.UserID, oneLine(err))}
		}
		return nil, fmt.Errorf("log in to %s: %w", c.opts.Homeserver, err)
	}
	if resp.UserID != c.self {
		return nil, &fatalError{fmt.Errorf("matrix connector %s: the password login made %s, not user_id %s; set user_id to the full id", c.name, resp.UserID, c.opts.UserID)}
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	if err := c.saveLogin(ctx, resp.DeviceID, resp.AccessToken); err != nil {
		return nil, err
	}
	c.log.Info("logged in to Matrix with the password; the device is kept for later starts", "user", resp.UserID, "device", resp.DeviceID)
	return cli, nil
}

// whoami checks cli's token belongs to user_id.
func (c *Connector) whoami(ctx context.Context, cli *mautrix.Client, what string) error {
	resp, err := cli.Whoami(ctx)
	if err != nil {
		if isDefinite(err) {
			return &fatalError{fmt.Errorf("matrix connector %s: %s rejected %s: %s; give a valid access_token or a password", c.name, c.opts.Homeserver, what, oneLine(err))}
		}
		return fmt.Errorf("check the access token with %s: %w", c.opts.Homeserver, err)
	}
	if resp.UserID != c.self {
		return &fatalError{fmt.Errorf("matrix connector %s: %s belongs to %s, not user_id %s; fix one of them", c.name, what, resp.UserID, c.opts.UserID)}
	}
	cli.DeviceID = resp.DeviceID
	return nil
}

// Sync back-off bounds.
const (
	syncRetryMin = 500 * time.Millisecond
	syncRetryMax = 30 * time.Second
)

// retrier backs off with jitter and logs each distinct failure once.
type retrier struct {
	c       *Connector
	what    string
	wait    time.Duration
	lastErr string
}

func (r *retrier) fail(err error) time.Duration {
	if r.wait == 0 {
		r.wait = syncRetryMin
	} else if r.wait < syncRetryMax {
		r.wait = min(r.wait*2, syncRetryMax)
	}
	if msg := oneLine(err); msg != r.lastErr {
		r.lastErr = msg
		r.c.log.Warn(r.what+" failed; retrying with back-off", "homeserver", r.c.opts.Homeserver, "err", msg)
	}
	r.c.sink.SetState(bridge.StateDisconnected, r.what+" failed: "+oneLine(err)+"; retrying")
	return r.wait/2 + rand.N(r.wait/2+1)
}

// ok reports whether there had been failures, and forgets them.
func (r *retrier) ok() bool {
	failed := r.wait > 0
	r.wait, r.lastErr = 0, ""
	return failed
}

// sleep waits d or until Stop; false on Stop.
func (c *Connector) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// run logs in (unless Start did), then syncs until Stop.
func (c *Connector) run(cli *mautrix.Client) {
	r := &retrier{c: c, what: "logging in to Matrix"}
	// Deliveries that came while the login failed wait out a back-off.
	late := cli == nil
	for cli == nil {
		var err error
		cli, err = c.login(c.ctx)
		if c.ctx.Err() != nil {
			return
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			c.sink.SetState(bridge.StateFailed, oneLine(err))
			c.warnOnce("login", oneLine(err))
			return
		}
		if err != nil && !c.sleep(r.fail(err)) {
			return
		}
	}
	c.mu.Lock()
	c.cli = cli
	c.mu.Unlock()
	c.syncLoop(cli, late)
}

// syncFilter asks for the timeline, typing and read receipts of joined
// rooms, and member events only for the senders shown.
func (c *Connector) syncFilter() string { return c.filterWith("") }

// leanSyncFilter is syncFilter without the bot's own events in timelines:
// every message it relays into Matrix would otherwise come back through
// /sync, a quarter of its CPU per message and work for the homeserver.
// Its own joins go too, which tell history from news in a room it has
// just joined: a batch with a room not seen yet is read again whole
// (syncLoop).
func (c *Connector) leanSyncFilter() string {
	self, _ := json.Marshal(c.self)
	return c.filterWith(`,"not_senders":[` + string(self) + `]`)
}

func (c *Connector) filterWith(timeline string) string {
	return fmt.Sprintf(`{"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]},`+
		`"room":{"timeline":{"limit":%d%s},"state":{"lazy_load_members":true},`+
		`"ephemeral":{"types":["m.typing","m.receipt"]},"account_data":{"not_types":["*"]}}}`, c.timelineLimit, timeline)
}

// needsWholeBatch says whether a lean batch may hide the bot's own
// membership: a room whose join the sync has not shown yet (just joined,
// or joined while a batch was unread), or a room left.
func (c *Connector) needsWholeBatch(resp *mautrix.RespSync) bool {
	if len(resp.Rooms.Leave) > 0 {
		return true
	}
	for room := range resp.Rooms.Join {
		if !c.syncSeen[room] {
			return true
		}
	}
	return false
}

// noteSeen records which rooms a whole batch showed the bot in.
func (c *Connector) noteSeen(resp *mautrix.RespSync) {
	for room := range resp.Rooms.Join {
		c.syncSeen[room] = true
	}
	for room := range resp.Rooms.Leave {
		delete(c.syncSeen, room)
	}
}

// batchTimeout bounds relaying one /sync batch: looking up names, reading
// a gap back, waiting for the core's commits.
const batchTimeout = 2 * time.Minute

// syncLoop long-polls /sync. A batch's position is saved only after the
// core committed its events, so a crash reads the batch again (the core
// drops what it already has) rather than losing it.
func (c *Connector) syncLoop(cli *mautrix.Client, late bool) {
	r := &retrier{c: c, what: "Matrix /sync"}
	filter := c.syncFilter()
	var since string
	for c.ctx.Err() == nil {
		sess, err := c.loadSession(c.ctx)
		if err == nil {
			since, err = c.prepare(cli, sess.since)
		}
		if err == nil {
			break
		}
		if !c.sleep(r.fail(err)) {
			return
		}
	}
	c.connected(cli, r.ok() || late)
	// Aliases in routes wait for a reachable homeserver; once is enough.
	c.sink.ChatsChanged()
	timeout := c.opts.SyncTimeout
	lean := c.leanSyncFilter()
	// The first batch after a start is read whole: the last run may have
	// joined a room and stopped before its join was read.
	whole := true
	for c.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(c.ctx, timeout+30*time.Second)
		using := lean
		if whole {
			using = filter
		}
		resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: int(timeout.Milliseconds()), Since: since, FilterID: using})
		if err == nil && !whole && c.needsWholeBatch(resp) {
			// The same position again, whole: at least what the lean
			// batch had, with the bot's own events.
			whole = true
			resp, err = cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0, Since: since, FilterID: filter})
		}
		cancel()
		if err == nil && resp.NextBatch == "" {
			err = errors.New("the homeserver's /sync answer has no next_batch")
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(c.ctx, batchTimeout)
			err = c.handleSync(ctx, cli, since, resp)
			cancel()
		}
		if c.ctx.Err() != nil {
			return
		}
		if err != nil && errors.Is(err, mautrix.MUnknownToken) {
			if fresh := c.relogin(); fresh != nil {
				cli = fresh
				continue
			}
		}
		if err != nil {
			if !c.sleep(r.fail(err)) {
				return
			}
			continue
		}
		if r.ok() {
			c.connected(cli, true)
		}
		if whole {
			// A lean batch with a leave is always read whole: only these
			// change what the sync has seen.
			c.noteSeen(resp)
			whole = false
		}
		since = resp.NextBatch
	}
}

// relogin replaces a client whose token the homeserver revoked (the
// device was logged out): with a password, by logging in again; with a
// configured token, only the operator can, and is told once.
func (c *Connector) relogin() *mautrix.Client {
	if c.opts.Password == "" {
		c.warnOnce("token revoked", fmt.Sprintf("matrix connector %s: %s no longer accepts the access_token of %s; configure a new one and restart", c.name, c.opts.Homeserver, c.opts.UserID))
		return nil
	}
	cli, err := c.login(c.ctx)
	var fatal *fatalError
	if errors.As(err, &fatal) {
		c.warnOnce("login", oneLine(err))
	}
	if err != nil {
		return nil
	}
	c.mu.Lock()
	c.cli = cli
	c.mu.Unlock()
	c.log.Info("the Matrix session was revoked; logged in again", "user", c.opts.UserID, "device", cli.DeviceID)
	return cli
}

// prepare learns the rooms the bot is in and returns the /sync position
// to go on from. On the very first start that is "now": the backlog from
// before the bridge existed is not relayed.
func (c *Connector) prepare(cli *mautrix.Client, since string) (string, error) {
	ctx, cancel := context.WithTimeout(c.ctx, loginTimeout)
	defer cancel()
	joined, err := cli.JoinedRooms(ctx)
	if err != nil {
		return "", fmt.Errorf("list the bot's rooms: %w", err)
	}
	c.mu.Lock()
	for _, room := range joined.JoinedRooms {
		c.joined[room] = true
		c.syncSeen[room] = true
	}
	c.mu.Unlock()
	if since != "" {
		return since, nil
	}
	resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0, FilterID: c.syncFilter()})
	if err != nil {
		return "", fmt.Errorf("first /sync: %w", err)
	}
	for room, jr := range resp.Rooms.Join {
		c.rooms.learn(room, jr.State.Events)
		c.rooms.learn(room, jr.Timeline.Events)
	}
	if err := c.saveSince(ctx, resp.NextBatch); err != nil {
		return "", err
	}
	c.log.Info("first start: relaying Matrix events from now on, not the rooms' history", "user", c.opts.UserID)
	return resp.NextBatch, nil
}

// connected reports the connection up; after failures, deliveries that
// wait out a back-off are retried now.
func (c *Connector) connected(cli *mautrix.Client, recovered bool) {
	c.sink.SetState(bridge.StateConnected, fmt.Sprintf("syncing as %s (device %s)", cli.UserID, cli.DeviceID))
	if recovered {
		c.log.Info("the Matrix homeserver answers again", "homeserver", c.opts.Homeserver)
		c.sink.Resume("")
	}
	c.kickJoiner()
}

// handleSync relays one /sync batch and saves its position once the core
// has committed every event in it.
func (c *Connector) handleSync(ctx context.Context, cli *mautrix.Client, since string, resp *mautrix.RespSync) error {
	var dones []chan error
	submit := func(ev *bridge.Event) {
		if err := ev.Check(); err != nil {
			c.log.Debug("Matrix event not relayed", "room", ev.Chat.ID, "id", ev.ID, "reason", err)
			return
		}
		done := make(chan error, 1)
		dones = append(dones, done)
		c.sink.Submit(ev, func(err error) { done <- err })
	}

	for room, lr := range resp.Rooms.Leave {
		c.handleLeave(room, lr.Timeline.Events)
	}
	for room := range resp.Rooms.Invite {
		c.handleInvite(room)
	}
	quiet := len(resp.Rooms.Leave) == 0 && len(resp.Rooms.Invite) == 0
	for _, room := range sortedRooms(resp.Rooms.Join) {
		jr := resp.Rooms.Join[room]
		c.mu.Lock()
		quiet = quiet && c.joined[room]
		c.mu.Unlock()
		c.rooms.learn(room, jr.State.Events)
		if err := c.handleRoom(ctx, cli, since, room, jr, submit); err != nil {
			return err
		}
	}
	for _, done := range dones {
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, bridge.ErrNoRoute) {
				return fmt.Errorf("the bridge did not take a Matrix event: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if resp.NextBatch == since {
		return nil
	}
	// A batch that relayed nothing and changed no membership (mostly the
	// bot's own messages coming back) relays nothing either when read
	// again after a crash: its position is saved at most every
	// quietSaveEvery.
	if quiet && len(dones) == 0 && time.Since(c.sinceSaved) < quietSaveEvery {
		return nil
	}
	// The batch's events are committed: the position need not be saved
	// before the next batch is read, so it shares the next commit (a
	// crash before that reads the batch again, and the core drops what
	// it has).
	c.sinceSaved = time.Now()
	c.store.WriteLazy(c.sinceWrite(resp.NextBatch), func(err error) {
		if err != nil && !errors.Is(err, bridge.ErrStoreClosed) {
			c.log.Warn("cannot save the Matrix /sync position; after a restart some events are read again, and not relayed twice", "err", err)
		}
	})
	return nil
}

// quietSaveEvery bounds how stale the saved /sync position may be after
// batches with nothing to relay: a restart reads at most that much again.
const quietSaveEvery = 10 * time.Second

// handleRoom converts one joined room's part of a batch.
func (c *Connector) handleRoom(ctx context.Context, cli *mautrix.Client, since string, room id.RoomID, jr *mautrix.SyncJoinedRoom, submit func(*bridge.Event)) error {
	c.mu.Lock()
	wasIn := c.joined[room]
	c.joined[room] = true
	c.mu.Unlock()
	events := jr.Timeline.Events
	joinedHere := ownJoinAt(events, c.self) >= 0
	if jr.Timeline.Limited && !joinedHere && since != "" {
		// More happened than one /sync carries: read the gap back.
		gap, err := c.backfill(ctx, cli, room, jr.Timeline.PrevBatch, since)
		if err != nil {
			return fmt.Errorf("read back the events of %s missed while away: %w", room, err)
		}
		events = append(gap, events...)
	}
	if i := ownJoinAt(events, c.self); i >= 0 {
		// Joined in this batch: what came before is history, not news.
		c.rooms.learn(room, events[:i+1])
		events = events[i+1:]
		c.backIn(room)
	} else if !wasIn {
		c.backIn(room)
	}
	// Every room's events go to the core, which knows the routes
	// (`chats: all` names no room); it refuses those no route takes.
	for _, evt := range events {
		evt.RoomID = room
		c.rooms.learn(room, []*event.Event{evt})
		if evt.Sender == c.self || evt.StateKey != nil {
			continue
		}
		if evt.Type == event.EventEncrypted {
			c.warnOnce("encrypted "+string(room), fmt.Sprintf("matrix connector %s: room %s is encrypted, which bot mode cannot read; its messages are not relayed (use an unencrypted room)", c.name, room))
			continue
		}
		ev, ok := convertEvent(evt)
		if ok && ev.Kind == bridge.KindVote {
			ok = c.readVote(ctx, cli, evt, ev)
		}
		if !ok {
			continue
		}
		ev.Sender.Name = c.rooms.memberName(ctx, cli, room, evt.Sender)
		ev.Chat.Name = c.rooms.roomName(ctx, cli, room)
		submit(ev)
	}
	for _, evt := range jr.Ephemeral.Events {
		evt.RoomID = room
		for _, ev := range c.convertEphemeral(evt) {
			ev.Sender.Name = c.rooms.memberName(ctx, cli, room, id.UserID(ev.Sender.ID))
			submit(ev)
		}
	}
	return nil
}

// maxBackfillPages bounds how far back a gap is read (100 events a page).
const maxBackfillPages = 20

// backfill returns, oldest first, the events of room between since and
// prevBatch that a limited /sync left out, stopping at the bot's own join.
func (c *Connector) backfill(ctx context.Context, cli *mautrix.Client, room id.RoomID, prevBatch, since string) ([]*event.Event, error) {
	var newestFirst []*event.Event
	from := prevBatch
	complete := false
pages:
	for page := 0; page < maxBackfillPages; page++ {
		resp, err := cli.Messages(ctx, room, from, since, mautrix.DirectionBackward, nil, 100)
		if err != nil {
			return nil, err
		}
		for _, evt := range resp.Chunk {
			newestFirst = append(newestFirst, evt)
			if isOwnJoin(evt, c.self) {
				complete = true
				break pages
			}
		}
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			complete = true
			break
		}
		from = resp.End
	}
	if !complete {
		c.log.Warn("more Matrix events were missed while away than are read back; the oldest are skipped", "room", room, "read_back", len(newestFirst))
	}
	slices.Reverse(newestFirst)
	return newestFirst, nil
}

// ownJoinAt is the index of the bot's last fresh join in events, or -1.
func ownJoinAt(events []*event.Event, self id.UserID) int {
	for i := len(events) - 1; i >= 0; i-- {
		if isOwnJoin(events[i], self) {
			return i
		}
	}
	return -1
}

// isOwnJoin reports whether evt is the bot joining (not a profile change).
func isOwnJoin(evt *event.Event, self id.UserID) bool {
	if evt.Type != event.StateMember || evt.StateKey == nil || *evt.StateKey != string(self) {
		return false
	}
	if membership(evt.Content.Raw) != event.MembershipJoin {
		return false
	}
	return evt.Unsigned.PrevContent == nil || membership(evt.Unsigned.PrevContent.Raw) != event.MembershipJoin
}

func membership(raw map[string]any) event.Membership {
	m, _ := raw["membership"].(string)
	return event.Membership(m)
}

// backIn notes the bot is in room, so its removal is reported again.
func (c *Connector) backIn(room id.RoomID) {
	c.mu.Lock()
	wasRemoved := c.removed[room]
	delete(c.removed, room)
	c.joined[room] = true
	c.mu.Unlock()
	if wasRemoved {
		c.log.Info("the bot is back in a Matrix room", "room", room)
	}
}

// handleLeave reports the bot's removal from a routed room.
func (c *Connector) handleLeave(room id.RoomID, timeline []*event.Event) {
	var by, reason string
	var banned bool
	for _, evt := range timeline {
		if evt.Type == event.StateMember && evt.StateKey != nil && *evt.StateKey == string(c.self) {
			by = string(evt.Sender)
			reason, _ = evt.Content.Raw["reason"].(string)
			banned = membership(evt.Content.Raw) == event.MembershipBan
		}
	}
	c.mu.Lock()
	c.joined[room] = false
	c.mu.Unlock()
	if by == string(c.self) || !c.isRouted(room) {
		return
	}
	what := "removed"
	if banned {
		what = "banned"
	}
	text := fmt.Sprintf("matrix connector %s: the bot %s was %s from room %s", c.name, c.self, what, room)
	if by != "" {
		text += " by " + by
	}
	if reason != "" {
		text += " (" + strings.Join(strings.Fields(reason), " ") + ")"
	}
	c.reportRemoved(room, text+"; events for it are dropped until the bot is invited back")
}

// handleInvite joins a routed room the bot is invited to, even one it
// failed to join or was removed from: the invite is the fix.
func (c *Connector) handleInvite(room id.RoomID) {
	if !c.isRouted(room) {
		return
	}
	c.mu.Lock()
	delete(c.removed, room)
	for chat := range c.unjoinable {
		if chat == string(room) || c.aliases[chat] == room {
			delete(c.unjoinable, chat)
		}
	}
	c.joined[room] = false
	c.mu.Unlock()
	c.kickJoiner()
}

// joinLoop joins the routed rooms the bot is not in, whenever the routes,
// the login or an invite say there may be work.
func (c *Connector) joinLoop() {
	r := &retrier{c: c, what: "joining Matrix rooms"}
	var retry <-chan time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.joinKick:
		case <-retry:
		}
		retry = nil
		cli := c.client()
		if cli == nil {
			continue // the login kicks again
		}
		if err := c.joinRouted(cli); err != nil {
			retry = time.After(r.fail(err))
		} else {
			r.wait = 0
		}
	}
}

// joinRouted tries each routed room once; a refusal is reported once and
// not retried, a transient failure is returned for a retry.
func (c *Connector) joinRouted(cli *mautrix.Client) error {
	c.mu.Lock()
	routed := slices.Clone(c.routed)
	c.mu.Unlock()
	var transient error
	for _, chat := range routed {
		c.mu.Lock()
		skip := c.unjoinable[chat] || c.joined[id.RoomID(chat)] || c.removed[id.RoomID(chat)]
		c.mu.Unlock()
		if skip {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, loginTimeout)
		room, err := c.roomOf(ctx, chat)
		if err == nil {
			c.mu.Lock()
			skip = c.joined[room] || c.removed[room]
			c.mu.Unlock()
			if !skip {
				_, err = cli.JoinRoom(ctx, string(room), nil)
			}
		}
		cancel()
		switch {
		case c.ctx.Err() != nil:
			return nil
		case err == nil:
			if !skip {
				c.log.Info("joined a Matrix room the routes name", "room", chat)
				c.backIn(room)
			}
		case bridge.IsPermanent(err) || isDefinite(err):
			c.mu.Lock()
			c.unjoinable[chat] = true
			c.mu.Unlock()
			text := fmt.Sprintf("matrix connector %s: the bot %s cannot join room %s: %s; invite it or fix the route", c.name, c.self, chat, oneLine(err))
			c.log.Warn(text)
			c.sink.Notice(text)
		default:
			transient = err
		}
	}
	return transient
}

func sortedRooms(m map[id.RoomID]*mautrix.SyncJoinedRoom) []id.RoomID {
	rooms := make([]id.RoomID, 0, len(m))
	for room := range m {
		rooms = append(rooms, room)
	}
	slices.Sort(rooms)
	return rooms
}

// isDefinite reports whether err is the homeserver's considered answer
// (a 4xx other than rate limiting), which asking again will not change.
func isDefinite(err error) bool {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return false
	}
	s := httpErr.Response.StatusCode
	return s >= 400 && s < 500 && s != http.StatusTooManyRequests && s != http.StatusRequestTimeout
}
