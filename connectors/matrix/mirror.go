package matrix

// Portals made before a chat's first message: with a `chats: all` route
// from an origin that lists its chats (WhatsApp), the core hands over the
// origin's chats at start and whenever they change, and the chats that
// portals_at_start takes get their room at once, as mautrix-whatsapp
// makes rooms for a newly linked account.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

var _ bridge.ChatMirror = (*Connector)(nil)

// MirrorChats implements bridge.ChatMirror. The work is done by
// mirrorLoop once the homeserver answers.
func (c *Connector) MirrorChats(origin string, chats []bridge.ChatInfo) {
	if c.opts.Mode != ModeAppservice || c.opts.PortalsAtStart == PortalsNone {
		return
	}
	var take []bridge.ChatInfo
	for _, ch := range chats {
		if ch.Group || c.opts.PortalsAtStart == PortalsAll {
			take = append(take, ch)
		}
	}
	c.mu.Lock()
	c.mirror[origin] = take
	c.mu.Unlock()
	select {
	case c.mirrorKick <- struct{}{}:
	default:
	}
}

// mirrorLoop makes the portals MirrorChats asked for, one at a time so a
// large account does not crowd out the messages, retrying what fails.
func (c *Connector) mirrorLoop() {
	r := &retrier{c: c, what: "making portal rooms"}
	var retry <-chan time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.mirrorKick:
		case <-retry:
		}
		retry = nil
		if c.client() == nil {
			continue // asRun kicks again once the homeserver answers
		}
		if err := c.mirrorOnce(); err != nil {
			retry = time.After(r.fail(err))
		} else {
			r.wait = 0
		}
	}
}

// mirrorOnce makes the missing portals of every origin's listed chats,
// forgetting each list once all of it is done.
func (c *Connector) mirrorOnce() error {
	c.mu.Lock()
	pending := maps.Clone(c.mirror)
	c.mu.Unlock()
	for _, origin := range slices.Sorted(maps.Keys(pending)) {
		made := 0
		for _, ch := range pending[origin] {
			if c.ctx.Err() != nil {
				return nil
			}
			ref := bridge.ChatRef{Connector: origin, ID: ch.ID, Name: ch.Name, Direct: !ch.Group}
			ctx, cancel := context.WithTimeout(c.ctx, loginTimeout)
			room, err := c.as.portalRoom(ctx, ref)
			if err == nil && room == "" {
				info := c.describeChat(ctx, ref)
				if info.Name == "" {
					info.Name = ch.ID
				}
				_, err = c.as.ensurePortal(ctx, ref, info)
				made++
			}
			cancel()
			if err != nil {
				return fmt.Errorf("make the portal of %s: %w", ref, err)
			}
		}
		if made > 0 {
			c.log.Info("made portal rooms for the chats of a linked account", "origin", origin, "rooms", made)
		}
		c.mu.Lock()
		if slices.Equal(c.mirror[origin], pending[origin]) {
			delete(c.mirror, origin) // not replaced meanwhile
		}
		c.mu.Unlock()
	}
	return nil
}
