package whatsapp

// Descriptions of chats and people for destinations that show them (a
// Matrix portal's topic and picture, a ghost's avatar). Destinations may
// ask on every message, so group topics and profile picture IDs are
// cached per JID: a day at most, less when WhatsApp says they changed.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

const (
	// describeTTL is how long a topic or picture ID (or that there is
	// none) is believed without a change event. Change events are
	// delivered, after a reconnect too, so this only bounds a missed one.
	describeTTL = 24 * time.Hour
	// describeRetry is how long a failed request is not repeated:
	// destinations ask on every message, WhatsApp rate-limits queries.
	describeRetry = time.Minute
	// describeTimeout bounds one query to WhatsApp.
	describeTimeout = 10 * time.Second
	// avatarTimeout bounds a picture's download.
	avatarTimeout = 30 * time.Second
	// maxAvatarBytes caps a picture's download (WhatsApp's are ~100 KB).
	maxAvatarBytes = 5 << 20
	// avatarRefPrefix starts an avatar's Media.Ref, "avatar:JID:PICTUREID";
	// attachments' refs are JSON objects, so the two cannot be confused.
	avatarRefPrefix = "avatar:"
)

var _ bridge.Describer = (*Connector)(nil)

// errOffline is a query that could not be made: the link is not
// connected. Unlike a failed query it is not remembered, so the first
// call after connecting asks.
var errOffline = errors.New("not connected")

// describeCache holds, per JID without device, what WhatsApp was last
// asked about it. The zero value is ready.
type describeCache struct {
	mu      sync.Mutex
	entries map[descKey]*descEntry
	now     func() time.Time // nil is time.Now; tests move the clock
	http    *http.Client     // downloads pictures; nil is http.DefaultClient
}

type descKey struct {
	what string // descPicture or descTopic
	jid  types.JID
}

const (
	descPicture = "picture" // the profile picture's ID; "" is none
	descTopic   = "topic"   // a group's description
)

// descValue is what WhatsApp said: a group's topic, or a picture's ID
// ("" for none) with the address to download it from, which expires.
type descValue struct {
	val string
	url string
}

type descEntry struct {
	val     descValue
	expires time.Time // val holds until then; zero when never fetched
	failed  error     // the last query's failure,
	retryAt time.Time // not repeated before then
	flight  *descFlight
}

// descFlight is a query under way; concurrent callers share it.
type descFlight struct {
	done chan struct{}
	val  descValue
	err  error
}

func (d *describeCache) clock() time.Time {
	if d.now != nil {
		return d.now()
	}
	return time.Now()
}

// get answers key from the cache, else asks with fetch, once however many
// callers wait. A failed query answers with the expired value if there is
// one: a stale picture beats none.
func (d *describeCache) get(ctx, runCtx context.Context, key descKey, fetch func(context.Context) (descValue, error)) (descValue, error) {
	d.mu.Lock()
	if d.entries == nil {
		d.entries = map[descKey]*descEntry{}
	}
	e := d.entries[key]
	if e == nil {
		e = &descEntry{}
		d.entries[key] = e
	}
	now := d.clock()
	switch {
	case now.Before(e.expires):
		v := e.val
		d.mu.Unlock()
		return v, nil
	case e.failed != nil && now.Before(e.retryAt):
		v, err := e.val, e.failed
		if !e.expires.IsZero() {
			err = nil
		}
		d.mu.Unlock()
		return v, err
	}
	f := e.flight
	if f == nil {
		f = &descFlight{done: make(chan struct{})}
		e.flight = f
		// Not on the caller's context: others may be waiting for it too.
		// Not in wg either: the timeout and the connector's life end it.
		go d.fly(runCtx, key, e, f, fetch)
	}
	d.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		return descValue{}, ctx.Err()
	}
}

// fly runs one query and records its answer, unless key was forgotten
// meanwhile (a change event came): that answer may predate the change.
func (d *describeCache) fly(runCtx context.Context, key descKey, e *descEntry, f *descFlight, fetch func(context.Context) (descValue, error)) {
	ctx, cancel := context.WithTimeout(runCtx, describeTimeout)
	v, err := fetch(ctx)
	cancel()
	d.mu.Lock()
	current := d.entries[key] == e
	if e.flight == f {
		e.flight = nil
	}
	if current {
		now := d.clock()
		switch {
		case err == nil:
			e.val, e.expires, e.failed = v, now.Add(describeTTL), nil
		case !errors.Is(err, errOffline):
			e.failed, e.retryAt = err, now.Add(describeRetry)
		}
		if err != nil && !e.expires.IsZero() {
			v, err = e.val, nil
		}
	}
	f.val, f.err = v, err
	d.mu.Unlock()
	close(f.done)
}

// peek is key's value if it was ever fetched, expired or not.
func (d *describeCache) peek(key descKey) (descValue, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[key]
	if e == nil || e.expires.IsZero() {
		return descValue{}, false
	}
	return e.val, true
}

// put records what became known without a query.
func (d *describeCache) put(key descKey, val descValue) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries == nil {
		d.entries = map[descKey]*descEntry{}
	}
	d.entries[key] = &descEntry{val: val, expires: d.clock().Add(describeTTL)}
}

// forget drops keys, so the next call asks WhatsApp again.
func (d *describeCache) forget(keys ...descKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		delete(d.entries, k)
	}
}

// reset forgets everything, as when the link is unlinked.
func (d *describeCache) reset() {
	d.mu.Lock()
	d.entries = nil
	d.mu.Unlock()
}

// DescribeChat implements bridge.Describer: a chat's name, a group's
// topic, and the chat's picture.
func (c *Connector) DescribeChat(ctx context.Context, chat string) (bridge.ChatDescription, error) {
	jid, err := describedJID(chat)
	if err != nil {
		return bridge.ChatDescription{}, err
	}
	desc := bridge.ChatDescription{Direct: chatRef(jid).Direct}
	if jid.Server == types.GroupServer {
		topic, err := c.desc.get(ctx, c.runCtx(), descKey{descTopic, jid}, func(ctx context.Context) (descValue, error) {
			topic, err := c.fetchTopic(ctx, jid)
			return descValue{val: topic}, err
		})
		if err != nil {
			return bridge.ChatDescription{}, err
		}
		desc.Topic = topic.val
	}
	if desc.Direct || jid.Server == types.GroupServer {
		// Broadcast lists and the status chat have no picture.
		if desc.AvatarID, desc.Avatar, err = c.picture(ctx, jid); err != nil {
			return bridge.ChatDescription{}, err
		}
	}
	// After the topic: its query also told the group's name.
	nameCtx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	desc.Name = c.chats.chatName(nameCtx, jid)
	return desc, nil
}

// DescribeSender implements bridge.Describer: a person's name, as their
// messages carry it, and their profile picture.
func (c *Connector) DescribeSender(ctx context.Context, chat, sender string) (bridge.SenderDescription, error) {
	jid, err := describedJID(sender)
	if err != nil {
		return bridge.SenderDescription{}, err
	}
	var desc bridge.SenderDescription
	if desc.AvatarID, desc.Avatar, err = c.picture(ctx, jid); err != nil {
		return bridge.SenderDescription{}, err
	}
	desc.Name = c.chats.senderName(ctx, jid, "", isOwn(c.dev(), jid.String()))
	return desc, nil
}

func describedJID(id string) (types.JID, error) {
	jid, err := types.ParseJID(id)
	if err != nil || jid.User == "" {
		return types.EmptyJID, fmt.Errorf("%q is not a WhatsApp chat or user id", id)
	}
	return jid.ToNonAD(), nil
}

// picture is jid's profile picture: its ID and Media, or none. A person
// is asked about once, whether a chat names them by phone number or LID.
func (c *Connector) picture(ctx context.Context, jid types.JID) (string, *bridge.Media, error) {
	jid = c.canonicalJID(ctx, jid)
	pic, err := c.desc.get(ctx, c.runCtx(), descKey{descPicture, jid}, func(ctx context.Context) (descValue, error) {
		info, err := c.fetchPicture(ctx, jid)
		if info == nil {
			return descValue{}, err
		}
		return descValue{val: info.ID, url: info.URL}, nil
	})
	id := pic.val
	if err != nil || id == "" {
		return "", nil, err
	}
	return id, &bridge.Media{MIME: "image/jpeg", Name: "avatar.jpg", Ref: avatarRefPrefix + jid.String() + ":" + id}, nil
}

// online is the link's client when it can query WhatsApp.
func (c *Connector) online() (waClient, error) {
	cli, _ := c.current()
	if cli == nil || !cli.IsLoggedIn() {
		return nil, fmt.Errorf("WhatsApp link %q is %w", c.name, errOffline)
	}
	return cli, nil
}

// offline marks a query that failed because there was no connection, or
// it went away under the query: not a failed query to wait out, as with
// errOffline. (whatsmeow says it is logged in while its connection is
// down; a query then fails with ErrNotConnected. One it sent again after
// reconnecting ends in a DisconnectedError that is not ErrIQDisconnected.)
func (c *Connector) offline(err error) error {
	var dropped *whatsmeow.DisconnectedError
	if errors.Is(err, whatsmeow.ErrNotConnected) || errors.As(err, &dropped) {
		return fmt.Errorf("WhatsApp link %q is %w (%v)", c.name, errOffline, err)
	}
	return err
}

// fetchPicture asks WhatsApp for jid's full-size profile picture. Nil,
// without error, is none, or one hidden from the owner by privacy
// settings: either lasts until a change event says otherwise.
func (c *Connector) fetchPicture(ctx context.Context, jid types.JID) (*types.ProfilePictureInfo, error) {
	cli, err := c.online()
	if err != nil {
		return nil, err
	}
	// The full picture: destinations show it large (a room's avatar).
	info, err := cli.GetProfilePictureInfo(ctx, jid, &whatsmeow.GetProfilePictureParams{Preview: false})
	switch {
	case errors.Is(err, whatsmeow.ErrProfilePictureNotSet), errors.Is(err, whatsmeow.ErrProfilePictureUnauthorized):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("ask WhatsApp for the picture of %s: %w", jid, c.offline(err))
	case info == nil || info.ID == "":
		return nil, nil
	}
	return info, nil
}

// fetchTopic asks WhatsApp for a group's description, noting its name
// too. A group the owner is not in has none to show.
func (c *Connector) fetchTopic(ctx context.Context, jid types.JID) (string, error) {
	cli, err := c.online()
	if err != nil {
		return "", err
	}
	info, err := cli.GetGroupInfo(ctx, jid)
	switch {
	case errors.Is(err, whatsmeow.ErrNotInGroup), errors.Is(err, whatsmeow.ErrGroupNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("ask WhatsApp for the description of group %s: %w", jid, c.offline(err))
	}
	if info.Name != "" && c.chats.knownGroupName(jid) != info.Name {
		c.chats.putGroup(ctx, jid, info.Name)
		c.withSink(func(s bridge.Sink) { s.ChatsChanged() })
	}
	if info.TopicDeleted {
		return "", nil
	}
	return info.Topic, nil
}

// knownGroupName is the group's cached name, "" if none.
func (cc *chatCache) knownGroupName(jid types.JID) string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.groups[jid.ToNonAD()]
}

// onPicture forgets jid's picture, under whatever JID it was kept, and
// has destinations that keep it ask again.
func (c *Connector) onPicture(e *events.Picture) {
	jid := e.JID.ToNonAD()
	jids := []types.JID{jid, c.canonicalJID(c.runCtx(), jid)}
	if dev := c.dev(); dev != nil && dev.LIDs != nil {
		if alt, err := dev.GetAltJID(c.runCtx(), jid); err == nil && !alt.IsEmpty() {
			jids = append(jids, alt.ToNonAD())
		}
	}
	c.forgetDescription(jids, descPicture)
}

// nameChanged says a person's name may have changed (their push name,
// business name or address book entry): names are looked up again, and
// destinations that keep the name (a Matrix ghost, a portal of their
// chat) hear of it now rather than with the person's next message.
func (c *Connector) nameChanged(jid, alt types.JID) {
	c.chats.invalidateNames()
	if jid.IsEmpty() {
		return
	}
	jid = jid.ToNonAD()
	jids := []types.JID{c.canonicalJID(c.runCtx(), jid)}
	if !alt.IsEmpty() {
		jids = append(jids, alt.ToNonAD())
	} else if dev := c.dev(); dev != nil && dev.LIDs != nil {
		if a, err := dev.GetAltJID(c.runCtx(), jid); err == nil && !a.IsEmpty() {
			jids = append(jids, a.ToNonAD())
		}
	}
	c.forgetDescription(append(jids, jid))
}

// forgetDescription drops what is cached of jids (the whats: descTopic,
// descPicture), so the next description asks WhatsApp, and tells the core
// that their descriptions changed: destinations ask once per chat or
// person, and again only on this.
func (c *Connector) forgetDescription(jids []types.JID, whats ...string) {
	var keys []descKey
	said := map[types.JID]bool{}
	for _, j := range jids {
		j = j.ToNonAD()
		for _, what := range whats {
			keys = append(keys, descKey{what, j})
		}
		if !said[j] {
			said[j] = true
			c.withSink(func(s bridge.Sink) { s.DescriptionChanged(j.String()) })
		}
	}
	c.desc.forget(keys...)
}

// openAvatar implements OpenMedia for a picture a description named. It
// downloads it from the address the description's query gave, which
// costs no query; when that fails (the address expired) or is not known,
// it asks WhatsApp for a fresh one. When the picture changed since, it
// serves the current one rather than fail (the destination wants the
// chat's picture, not a past one) and corrects the cache, so the next
// description names it and destinations update.
func (c *Connector) openAvatar(ctx context.Context, m bridge.Media) (io.ReadCloser, error) {
	jid, id, ok := parseAvatarRef(m.Ref)
	if !ok {
		return nil, bridge.Permanentf("profile picture reference %q is damaged", m.Ref)
	}
	key := descKey{descPicture, c.canonicalJID(ctx, jid)}
	if v, ok := c.desc.peek(key); ok && v.val == id && v.url != "" {
		data, err := c.downloadAvatar(ctx, v.url)
		if err == nil || bridge.IsPermanent(err) {
			return avatarData(data, err)
		}
		c.log.Debug("a WhatsApp profile picture's address no longer works; asking for a new one", "link", c.name, "jid", jid, "err", err)
	}
	qctx, cancel := context.WithTimeout(ctx, describeTimeout)
	info, err := c.fetchPicture(qctx, key.jid)
	cancel()
	if err != nil {
		return nil, err
	}
	if info == nil {
		c.desc.put(key, descValue{})
		return nil, bridge.Permanentf("%s no longer has a profile picture to show", jid)
	}
	c.desc.put(key, descValue{val: info.ID, url: info.URL})
	return avatarData(c.downloadAvatar(ctx, info.URL))
}

func avatarData(data []byte, err error) (io.ReadCloser, error) {
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// parseAvatarRef reads "avatar:JID:PICTUREID". A JID without device has
// no colon, but the last colon splits either way.
func parseAvatarRef(ref string) (types.JID, string, bool) {
	rest, ok := strings.CutPrefix(ref, avatarRefPrefix)
	i := strings.LastIndexByte(rest, ':')
	if !ok || i < 0 || i == len(rest)-1 {
		return types.EmptyJID, "", false
	}
	jid, err := types.ParseJID(rest[:i])
	if err != nil || jid.User == "" {
		return types.EmptyJID, "", false
	}
	return jid.ToNonAD(), rest[i+1:], true
}

// downloadAvatar fetches a picture from the URL WhatsApp gave. The URL is
// kept out of errors, which get logged: its query signs the download.
func (c *Connector) downloadAvatar(ctx context.Context, address string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, avatarTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, address, nil)
	if err != nil {
		return nil, bridge.Permanentf("WhatsApp gave an unusable profile picture address")
	}
	hc := c.desc.http
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("download a WhatsApp profile picture: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download a WhatsApp profile picture: the server answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAvatarBytes+1))
	if err != nil {
		return nil, fmt.Errorf("download a WhatsApp profile picture: %w", err)
	}
	if len(data) > maxAvatarBytes {
		return nil, bridge.Permanentf("a WhatsApp profile picture is over %d bytes", maxAvatarBytes)
	}
	return data, nil
}
