package whatsapp

import (
	"context"
	"sync"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
)

// WhatsApp unlinks a device whose phone has been offline for about 14
// days. A linked device is not told when the phone goes quiet, so the
// link notes when it last heard from the phone itself (a message or
// receipt from it, its history and app state) and warns the owner once
// the silence nears the limit.
const (
	phoneWarnAfter  = 12 * 24 * time.Hour
	phoneUnlinkDays = 14
	// phoneSeenWrite: the time heard is written at most this often.
	phoneSeenWrite = time.Hour
	// phoneCheckEvery: how often a running link looks (one timer).
	phoneCheckEvery = 24 * time.Hour
)

type phoneSeen struct {
	mu      sync.Mutex
	at      time.Time // last heard from the phone
	written time.Time // last written to whatsapp_links
	warned  bool      // this silence was warned about
	timer   *time.Timer
}

// heardFromPhone notes that something came from the account's own phone.
func (c *Connector) heardFromPhone(from types.JID) {
	dev := c.dev()
	if dev == nil || dev.ID == nil || from.Device != 0 || (from.User != dev.ID.User && (dev.LID.IsEmpty() || from.User != dev.LID.User)) {
		return
	}
	now := time.Now()
	p := &c.phone
	p.mu.Lock()
	p.at, p.warned = now, false
	write := now.Sub(p.written) >= phoneSeenWrite
	if write {
		p.written = now
	}
	p.mu.Unlock()
	if write {
		c.store.WriteAsync(func(tx *bridge.Tx) error {
			_, err := tx.Exec(`UPDATE whatsapp_links SET phone_seen = ? WHERE link = ?`, now.Unix(), c.name)
			return err
		}, func(err error) {
			if err != nil {
				c.log.Debug("could not note when the phone was last heard", "link", c.name, "err", err)
			}
		})
	}
}

// loadPhoneSeen reads when the phone was last heard (linking counts).
func (c *Connector) loadPhoneSeen(ctx context.Context) {
	var at int64
	if err := c.store.QueryRowContext(ctx, `SELECT phone_seen FROM whatsapp_links WHERE link = ?`, c.name).Scan(&at); err != nil || at == 0 {
		return
	}
	c.phone.mu.Lock()
	c.phone.at, c.phone.written = time.Unix(at, 0), time.Unix(at, 0)
	c.phone.mu.Unlock()
}

// checkPhone warns, once per silence, when the phone has not been heard
// from for phoneWarnAfter, and looks again in a day.
func (c *Connector) checkPhone() {
	p := &c.phone
	p.mu.Lock()
	at, warn := p.at, !p.warned && !p.at.IsZero() && time.Since(p.at) >= phoneWarnAfter
	if warn {
		p.warned = true
	}
	if p.timer == nil {
		p.timer = time.AfterFunc(phoneCheckEvery, c.checkPhone)
	} else {
		p.timer.Reset(phoneCheckEvery)
	}
	p.mu.Unlock()
	if warn {
		days := int(time.Since(at) / (24 * time.Hour))
		c.notice("WhatsApp link '%s' has not heard from the phone for %d days; WhatsApp unlinks a device whose phone stays offline about %d days. Open WhatsApp on the phone, connected to the internet.", c.name, days, phoneUnlinkDays)
	}
}

// stopPhoneCheck ends the daily look.
func (c *Connector) stopPhoneCheck() {
	c.phone.mu.Lock()
	if c.phone.timer != nil {
		c.phone.timer.Stop()
		c.phone.timer = nil
	}
	c.phone.mu.Unlock()
}
