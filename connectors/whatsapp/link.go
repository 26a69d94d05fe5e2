package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// pairingCodeLifetime is how long WhatsApp accepts a pairing code.
const pairingCodeLifetime = 3 * time.Minute

// Link implements bridge.Linker: it pairs a new device by QR code (or by
// pairing code with opts.Phone), reporting each code as WhatsApp rotates
// it. In the daemon the new device starts relaying at once; run by the CLI
// with no daemon, it is left linked for the daemon's next start.
func (c *Connector) Link(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	c.mu.Lock()
	switch {
	case c.linking:
		c.mu.Unlock()
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkBusy, Detail: "a link is already in progress for " + c.name}
	case c.device != nil && c.device.ID != nil:
		acct := accountOf(c.device)
		c.mu.Unlock()
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkAlreadyLinked, Detail: fmt.Sprintf("%s is linked to %s (%s)", c.name, acct.Phone, acct.PushName)}
	}
	c.linking = true
	started := c.sink != nil
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.linking = false
		c.mu.Unlock()
	}()

	if !started {
		// No daemon drives this link: this process must hold its lock.
		lock, err := acquireLock(c.lockPath)
		if err != nil {
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkBusy, Detail: err.Error()}
		}
		defer lock.release()
	}

	dev := c.container.NewDevice()
	cli := c.newClient(dev)
	paired := make(chan *events.PairSuccess, 1)
	var failed sync.Once
	pairErr := make(chan error, 1)
	cli.AddEventHandlerWithSuccessStatus(func(evt any) bool {
		switch e := evt.(type) {
		case *events.PairSuccess:
			select {
			case paired <- e:
			default:
			}
		case *events.PairError:
			failed.Do(func() { pairErr <- e.Error })
		}
		if started {
			// Once linked, this client is the link's: its events relay.
			c.mu.Lock()
			mine := c.client == cli
			c.mu.Unlock()
			if mine {
				return c.handle(evt)
			}
		}
		// Nothing relays this client's messages yet (or no daemon runs):
		// leave them unacknowledged so WhatsApp delivers them again to
		// the client that relays them, instead of dropping them.
		switch evt.(type) {
		case *events.Message, *events.GroupInfo:
			return false
		}
		return true
	})

	qr, err := cli.GetQRChannel(ctx)
	if err != nil {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: err.Error()}
	}
	if err := c.connectForLink(ctx, cli, progress); err != nil {
		return bridge.LinkAccount{}, err
	}
	ok := false
	defer func() {
		if !ok {
			cli.Disconnect()
		}
	}()

	codeRequested := false
	for {
		select {
		case <-ctx.Done():
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled}
		case err := <-pairErr:
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: err.Error()}
		case item, open := <-qr:
			if !open {
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: "WhatsApp closed the pairing session"}
			}
			switch item.Event {
			case whatsmeow.QRChannelEventCode:
				if opts.Phone == "" {
					progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: item.Code, Expires: time.Now().Add(item.Timeout)})
					continue
				}
				if codeRequested {
					continue // the pairing code stays valid while QR codes rotate
				}
				// A pairing code can be asked for once the session is in
				// the pairing state, which the first QR code signals.
				codeRequested = true
				code, err := cli.PairPhone(ctx, opts.Phone, true, whatsmeow.PairClientChrome, "Chrome (Linux)")
				if err != nil {
					return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: err.Error()}
				}
				progress(bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: code, Expires: time.Now().Add(pairingCodeLifetime)})
			case whatsmeow.QRChannelSuccess.Event:
				acct, err := c.finishLink(ctx, cli, dev, paired, started)
				if err != nil {
					return bridge.LinkAccount{}, err
				}
				ok = started // in the daemon the client lives on
				if !started {
					cli.Disconnect()
					ok = true
				}
				return acct, nil
			case whatsmeow.QRChannelTimeout.Event:
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkTimedOut}
			case whatsmeow.QRChannelScannedWithoutMultidevice.Event:
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkNoMultidevice}
			case whatsmeow.QRChannelClientOutdated.Event:
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkOutdated}
			case whatsmeow.QRChannelEventError:
				detail := "pairing failed"
				if item.Error != nil {
					detail = item.Error.Error()
				}
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: detail}
			default:
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: "unexpected pairing event " + item.Event}
			}
		}
	}
}

// osInfoMu guards whatsmeow's process-wide device name (store.SetOSInfo),
// which the registration handshake in Connect reads: two links pairing at
// once each show under their own name.
var osInfoMu sync.Mutex

// linkRetryMax caps the wait between attempts while someone waits at the
// terminal to link.
const linkRetryMax = 30 * time.Second

// connectForLink dials WhatsApp for pairing. While the network is down it
// says so once per distinct error and keeps retrying with backoff until
// ctx ends (Ctrl-C).
func (c *Connector) connectForLink(ctx context.Context, cli waClient, progress func(bridge.LinkProgress)) error {
	wait := time.Second
	var lastErr string
	for {
		osInfoMu.Lock()
		store.SetOSInfo(c.opts.DeviceName, [3]uint32{1, 0, 0})
		err := cli.Connect()
		osInfoMu.Unlock()
		if err == nil {
			return nil
		}
		if msg := err.Error(); msg != lastErr {
			lastErr = msg
			progress(bridge.LinkProgress{Kind: bridge.ProgressInfo, Message: "Cannot reach WhatsApp's servers (" + msg + "); retrying with backoff. Check the network, or press Ctrl-C to stop."})
		}
		select {
		case <-ctx.Done():
			return &bridge.LinkError{Reason: bridge.LinkNetworkDown, Detail: err.Error()}
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
		wait = min(wait*2, c.opts.ReconnectMax, linkRetryMax)
	}
}

// finishLink records the new device and, in the daemon, makes it the
// link's client.
func (c *Connector) finishLink(ctx context.Context, cli waClient, dev *store.Device, paired <-chan *events.PairSuccess, started bool) (bridge.LinkAccount, error) {
	select {
	case e := <-paired:
		// whatsmeow fills the device in before the success item; the event
		// also says the phone's platform.
		if dev.Platform == "" {
			dev.Platform = e.Platform
		}
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
	}
	if dev.ID == nil {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: "WhatsApp reported success without a device id"}
	}
	if err := c.saveLink(context.WithoutCancel(ctx), *dev.ID); err != nil {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: "linked, but the link could not be saved: " + err.Error()}
	}
	acct := accountOf(dev)
	c.mu.Lock()
	c.device = dev
	c.status.Account = acct
	if started {
		c.client = cli
	}
	c.mu.Unlock()
	c.log.Info("WhatsApp linked", "link", c.name, "phone", acct.Phone, "push_name", acct.PushName, "platform", acct.Platform)
	if started {
		c.setState(bridge.LinkConnected, "")
		c.withSink(func(s bridge.Sink) { s.Resume(""); s.ChatsChanged() })
		go c.refreshChats(c.runCtx())
	} else {
		c.setState(bridge.LinkStopped, "linked; start phonebridge to relay")
	}
	return acct, nil
}

// Unlink implements bridge.Linker: it logs the device out (it leaves the
// phone's list of linked devices) and deletes its keys; localOnly deletes
// the keys without telling WhatsApp.
func (c *Connector) Unlink(ctx context.Context, localOnly bool) error {
	c.mu.Lock()
	cli, dev, started := c.client, c.device, c.sink != nil
	c.mu.Unlock()
	if dev == nil || dev.ID == nil {
		return &bridge.LinkError{Reason: bridge.LinkFailed, Detail: fmt.Sprintf("%s is not linked", c.name)}
	}
	if !started {
		lock, err := acquireLock(c.lockPath)
		if err != nil {
			return &bridge.LinkError{Reason: bridge.LinkBusy, Detail: err.Error()}
		}
		defer lock.release()
	}
	if !localOnly {
		if cli == nil {
			// No daemon: connect just to log out.
			cli = c.newClient(dev)
			if err := connectAndWait(ctx, cli); err != nil {
				return &bridge.LinkError{Reason: bridge.LinkNetworkDown, Detail: fmt.Sprintf("%v; `phonebridge unlink %s --local` forgets the keys here only (the phone keeps listing the device until you remove it there)", err, c.name)}
			}
		}
		if err := cli.Logout(ctx); err != nil {
			return &bridge.LinkError{Reason: bridge.LinkFailed, Detail: fmt.Sprintf("WhatsApp refused the logout: %v; `phonebridge unlink %s --local` forgets the keys here only", err, c.name)}
		}
	} else if err := dev.Delete(ctx); err != nil {
		return fmt.Errorf("delete the keys of %s: %w", c.name, err)
	}
	if cli != nil {
		cli.Disconnect()
	}
	if err := c.forgetLink(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.client, c.device = nil, nil
	c.status.Account = bridge.LinkAccount{}
	c.mu.Unlock()
	c.setState(bridge.LinkUnlinked, "unlinked with `phonebridge unlink`")
	c.log.Info("WhatsApp unlinked", "link", c.name, "local_only", localOnly)
	return nil
}

// connectAndWait connects cli and waits until WhatsApp accepts the session.
func connectAndWait(ctx context.Context, cli waClient) error {
	connected := make(chan struct{}, 1)
	cli.AddEventHandlerWithSuccessStatus(func(evt any) bool {
		if _, ok := evt.(*events.Connected); ok {
			select {
			case connected <- struct{}{}:
			default:
			}
		}
		return true
	})
	if err := cli.Connect(); err != nil {
		return fmt.Errorf("cannot reach WhatsApp: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case <-connected:
		return nil
	case <-ctx.Done():
		cli.Disconnect()
		return errors.New("WhatsApp did not accept the session within 30s")
	}
}
