package whatsapp

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
)

// chatCache knows the names of chats and people. Contacts and push names
// live in whatsmeow's store; group names are fetched from WhatsApp and
// kept in whatsapp_chats so they are known before connecting, which is
// when routes that name chats are resolved.
type chatCache struct {
	c *Connector

	mu     sync.Mutex
	groups map[types.JID]string
	// loaded: the group list came from WhatsApp at least once, so a name
	// not found is really unknown rather than not fetched yet.
	loaded bool
	people map[types.JID]string // display names, until contacts change
}

func (cc *chatCache) init(c *Connector) {
	cc.c = c
	cc.groups = map[types.JID]string{}
	cc.people = map[types.JID]string{}
	rows, err := c.store.QueryContext(context.Background(), `SELECT jid, name FROM whatsapp_chats WHERE link = ? AND grp = 1`, c.name)
	if err != nil {
		c.log.Warn("could not read cached WhatsApp group names", "link", c.name, "err", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var jid, name string
		if rows.Scan(&jid, &name) == nil {
			if j, err := types.ParseJID(jid); err == nil {
				cc.groups[j] = name
				cc.loaded = true
			}
		}
	}
}

// reset forgets every name, as when the link is unlinked.
func (cc *chatCache) reset() {
	cc.mu.Lock()
	cc.groups = map[types.JID]string{}
	cc.people = map[types.JID]string{}
	cc.loaded = false
	cc.mu.Unlock()
}

func (cc *chatCache) invalidateNames() {
	cc.mu.Lock()
	cc.people = map[types.JID]string{}
	cc.mu.Unlock()
}

// senderName is how a person shows: by default their name in the
// owner's address book, else the name they gave themselves (push name),
// else their business name, else their number; with names: push_name,
// the push name comes first. Either form of a person (number or LID)
// finds the names stored under the other.
func (cc *chatCache) senderName(ctx context.Context, jid types.JID, pushName string, fromMe bool) string {
	// The account's name as recorded under the connector's lock: the
	// device's PushName is written by whatsmeow's app state goroutine.
	if own := cc.c.LinkStatus().Account.Name; fromMe && own != "" {
		return own
	}
	jid = jid.ToNonAD()
	cc.mu.Lock()
	name, ok := cc.people[jid]
	cc.mu.Unlock()
	if ok && name != "" {
		return name
	}
	n := cc.lookupNames(ctx, jid)
	if pushName == "" {
		pushName = n.push
	}
	name = cmp.Or(n.contact, pushName, n.business)
	if cc.c.opts.Names == NamesPushName {
		name = cmp.Or(pushName, n.contact, n.business)
	}
	if name == "" {
		return displayNumber(jid)
	}
	cc.mu.Lock()
	cc.people[jid] = name
	cc.mu.Unlock()
	return name
}

// personNames are the names WhatsApp keeps of a person.
type personNames struct{ contact, push, business string }

func (cc *chatCache) lookupNames(ctx context.Context, jid types.JID) personNames {
	var out personNames
	dev := cc.c.dev()
	if dev == nil || dev.Contacts == nil {
		return out
	}
	candidates := []types.JID{jid}
	if dev.LIDs != nil {
		// People in groups may appear by their LID, contacts by number,
		// and the other way round.
		var other types.JID
		var err error
		switch jid.Server {
		case types.HiddenUserServer:
			other, err = dev.LIDs.GetPNForLID(ctx, jid)
		case types.DefaultUserServer:
			other, err = dev.LIDs.GetLIDForPN(ctx, jid)
		}
		if err == nil && !other.IsEmpty() {
			candidates = append(candidates, other)
		}
	}
	for _, j := range candidates {
		info, err := dev.Contacts.GetContact(ctx, j)
		if err != nil || !info.Found {
			continue
		}
		// The first form found with a name keeps it.
		out.contact = cmp.Or(out.contact, info.FullName, info.FirstName)
		out.push = cmp.Or(out.push, info.PushName)
		out.business = cmp.Or(out.business, info.BusinessName)
	}
	return out
}

// displayNumber shows a JID as a phone number where it is one.
func displayNumber(jid types.JID) string {
	if jid.Server == types.DefaultUserServer {
		return "+" + jid.User
	}
	return jid.User
}

// chatName is a chat's name: a group's subject, or the person's name.
func (cc *chatCache) chatName(ctx context.Context, chat types.JID) string {
	chat = chat.ToNonAD()
	if chat.Server != types.GroupServer {
		return cc.senderName(ctx, chat, "", false)
	}
	cc.mu.Lock()
	name, ok := cc.groups[chat]
	cc.mu.Unlock()
	if ok {
		return name
	}
	if cli, _ := cc.c.current(); cli != nil && cli.IsConnected() {
		if info, err := cli.GetGroupInfo(ctx, chat); err == nil {
			cc.putGroup(ctx, chat, info.Name)
			return info.Name
		}
	}
	return chat.User
}

// putGroup records a group's name.
func (cc *chatCache) putGroup(ctx context.Context, jid types.JID, name string) {
	jid = jid.ToNonAD()
	cc.mu.Lock()
	cc.groups[jid] = name
	cc.mu.Unlock()
	c := cc.c
	c.store.WriteAsync(func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO whatsapp_chats (link, jid, name, grp) VALUES (?, ?, ?, 1)
			ON CONFLICT (link, jid) DO UPDATE SET name = excluded.name`, c.name, jid.String(), name)
		return err
	}, func(err error) {
		if err != nil {
			c.log.Warn("could not cache a WhatsApp group name", "link", c.name, "err", err)
		}
	})
}

// refreshChats fetches the account's groups, then has the core resolve
// routes that name chats again.
func (c *Connector) refreshChats(ctx context.Context) {
	cli, _ := c.current()
	if cli == nil {
		return
	}
	groups, err := cli.GetJoinedGroups(ctx)
	if err != nil {
		c.log.Warn("could not list WhatsApp groups; names may be stale", "link", c.name, "err", err)
		return
	}
	for _, g := range groups {
		c.chats.putGroup(ctx, g.JID, g.Name)
	}
	c.chats.mu.Lock()
	c.chats.loaded = true
	c.chats.mu.Unlock()
	c.withSink(func(s bridge.Sink) { s.ChatsChanged() })
}

// Chats implements bridge.ChatLister: the account's contacts and groups,
// by name, those matching search (in name or id, any case) when given.
func (c *Connector) Chats(ctx context.Context, search string) ([]bridge.ChatInfo, error) {
	dev := c.dev()
	if dev == nil || dev.ID == nil {
		return nil, fmt.Errorf("WhatsApp link %q is not linked: run `phonebridge link %s`", c.name, c.name)
	}
	var out []bridge.ChatInfo
	contacts, err := dev.Contacts.GetAllContacts(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the contacts of link %q: %w", c.name, err)
	}
	// A person may be known by LID and by number (push names come with
	// either): listed once, by number, under the best name known.
	type named struct {
		name string
		rank int // 0 full name … 4 the number
	}
	people := map[types.JID]named{}
	for jid, info := range contacts {
		best := named{displayNumber(jid), 4}
		order := []string{info.FullName, info.FirstName, info.PushName, info.BusinessName}
		if c.opts.Names == NamesPushName {
			order = []string{info.PushName, info.FullName, info.FirstName, info.BusinessName}
		}
		for i, n := range order {
			if n != "" {
				best = named{n, i}
				break
			}
		}
		id := c.canonicalJID(ctx, jid)
		if best.rank == 4 {
			best.name = displayNumber(id)
		}
		// On a tie, what is known under the number itself.
		if have, ok := people[id]; !ok || best.rank < have.rank || best.rank == have.rank && id == jid.ToNonAD() {
			people[id] = best
		}
	}
	for jid, p := range people {
		out = append(out, bridge.ChatInfo{ID: jid.String(), Name: p.name})
	}
	c.chats.mu.Lock()
	for jid, name := range c.chats.groups {
		out = append(out, bridge.ChatInfo{ID: jid.String(), Name: name, Group: true})
	}
	c.chats.mu.Unlock()
	if search != "" {
		q := strings.ToLower(search)
		kept := out[:0]
		for _, ch := range out {
			if strings.Contains(strings.ToLower(ch.Name), q) || strings.Contains(strings.ToLower(ch.ID), q) {
				kept = append(kept, ch)
			}
		}
		out = kept
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// ResolveChat implements bridge.ChatResolver: a chat id (anything with an
// @) stands for itself; a name must match exactly one chat.
func (c *Connector) ResolveChat(ctx context.Context, nameOrID string) (string, error) {
	if strings.Contains(nameOrID, "@") {
		jid, err := types.ParseJID(nameOrID)
		if err != nil || jid.User == "" {
			return "", fmt.Errorf("%q is not a WhatsApp chat id (like 15551234567@s.whatsapp.net or 1203630…@g.us)", nameOrID)
		}
		// A person's LID names their chat by number, as events do.
		return c.canonicalJID(ctx, jid).String(), nil
	}
	dev := c.dev()
	if dev == nil || dev.ID == nil {
		return "", fmt.Errorf("WhatsApp link %q is not linked yet, so %q cannot be looked up: %w", c.name, nameOrID, bridge.ErrChatListUnavailable)
	}
	chats, err := c.Chats(ctx, "")
	if err != nil {
		return "", err
	}
	var found []bridge.ChatInfo
	for _, ch := range chats {
		if ch.Name == nameOrID {
			found = append(found, ch)
		}
	}
	c.chats.mu.Lock()
	loaded := c.chats.loaded
	c.chats.mu.Unlock()
	switch {
	case len(found) == 1:
		return found[0].ID, nil
	case len(found) > 1:
		ids := make([]string, len(found))
		for i, f := range found {
			ids[i] = f.ID
		}
		return "", fmt.Errorf("%d WhatsApp chats on link %q are called %q (%s): use the chat id instead", len(found), c.name, nameOrID, strings.Join(ids, ", "))
	case !loaded:
		return "", fmt.Errorf("WhatsApp link %q has not loaded its groups yet: %w", c.name, bridge.ErrChatListUnavailable)
	}
	return "", fmt.Errorf("no WhatsApp chat on link %q is called %q; `phonebridge chats %s --search %q` lists similar ones", c.name, nameOrID, c.name, nameOrID)
}
