package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

// Link implements bridge.Linker: it pairs a new device by QR code (or by
// pairing code with opts.Phone), reporting each code as WhatsApp rotates
// it, and returns once WhatsApp has accepted the new device's first
// session (or given up waiting for it: linked all the same). In the
// daemon the new device relays from then on; run by the CLI with no
// daemon, it is left linked for the daemon's next start.
func (c *Connector) Link(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	c.mu.Lock()
	switch {
	case c.linking:
		c.mu.Unlock()
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkBusy, Service: service, Cause: "a link is already in progress for " + c.name}
	case c.device != nil && c.device.ID != nil:
		acct := c.status.Account
		c.mu.Unlock()
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkAlreadyLinked, Service: service, Account: &acct}
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
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkBusy, Service: service, Cause: err.Error()}
		}
		defer lock.release()
	}

	dev := c.container.NewDevice()
	cli := c.newClient(dev)
	if wc, ok := cli.(*whatsmeow.Client); ok {
		// After pairing WhatsApp has the client log in anew (515).
		// whatsmeow would dial once, and leave the link dead if that
		// failed; the connector logs in itself, retrying, once the new
		// device is the link's.
		wc.DisableLoginAutoReconnect = true
	}
	ps := &pairing{paired: make(chan *events.PairSuccess, 1), failed: make(chan error, 1), relogin: make(chan struct{}, 1), settled: make(chan struct{}, 1)}
	defer ps.done.Store(true)
	cli.AddEventHandlerWithSuccessStatus(func(evt any) bool { return c.onPairingEvent(cli, ps, started, evt) })

	// Link's end ends whatsmeow's code emitter, whatever the outcome.
	qrCtx, stopQR := context.WithCancel(ctx)
	defer stopQR()
	qr, err := cli.GetQRChannel(qrCtx)
	if err != nil {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: err.Error()}
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
	versionTried := false // paired again with WhatsApp Web's current version
	for {
		select {
		case <-ctx.Done():
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled, Service: service}
		case err := <-ps.failed:
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: err.Error()}
		case item, open := <-qr:
			if !open {
				if ctx.Err() != nil {
					// whatsmeow closes the channel when cancelled, too.
					return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled, Service: service}
				}
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: "WhatsApp closed the pairing session"}
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
				// the pairing state, which the first QR code signals. It
				// is good until the session ends, when the QR codes
				// WhatsApp offered have all been shown.
				codeRequested = true
				ends := time.Now().Add(qrSessionLength(int(ps.codes.Load())))
				code, err := cli.PairPhone(ctx, opts.Phone, true, whatsmeow.PairClientChrome, "Chrome (Linux)")
				if err != nil {
					return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: err.Error()}
				}
				progress(bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: code, Expires: ends})
			case whatsmeow.QRChannelSuccess.Event:
				acct, err := c.finishLink(ctx, cli, dev, ps, started, progress)
				if err != nil {
					return bridge.LinkAccount{}, err
				}
				ok = true
				return acct, nil
			case whatsmeow.QRChannelTimeout.Event:
				if opts.Phone != "" {
					// WhatsApp tells the phone, not the client, that a code
					// was typed wrong: all the link sees is the end.
					return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCodeExpired, Service: service}
				}
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkTimedOut, Service: service}
			case whatsmeow.QRChannelScannedWithoutMultidevice.Event:
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkNoMultidevice, Service: service}
			case whatsmeow.QRChannelClientOutdated.Event:
				if cause := c.newerVersion(ctx, versionTried); cause != "" {
					le := &bridge.LinkError{Reason: bridge.LinkOutdated, Service: service}
					if c.opts.Version != "" {
						le.Cause = cause // "update phonebridge" alone would hide the pin
					}
					return bridge.LinkAccount{}, le
				}
				// A new pairing session, announcing WhatsApp Web's current
				// version; the refusal settled nothing.
				versionTried = true
				select {
				case <-ps.settled:
				default:
				}
				cli.Disconnect()
				if qr, err = cli.GetQRChannel(qrCtx); err != nil {
					return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: err.Error()}
				}
				if err := c.connectForLink(ctx, cli, progress); err != nil {
					return bridge.LinkAccount{}, err
				}
			case whatsmeow.QRChannelEventError:
				detail := "pairing failed"
				if item.Error != nil {
					detail = item.Error.Error()
				}
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: detail}
			default:
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: "unexpected pairing event " + item.Event}
			}
		}
	}
}

// qrSessionLength is how long whatsmeow shows n QR codes before it ends
// the pairing session (qrchan.go): 60 s for a code when six are left, 20 s
// for every other. WhatsApp offers six: 160 s.
func qrSessionLength(n int) time.Duration {
	if n <= 0 {
		n = 6
	}
	var d time.Duration
	for left := n; left > 0; left-- {
		if left == 6 {
			d += 60 * time.Second
		} else {
			d += 20 * time.Second
		}
	}
	return d
}

// pairing is what the pairing client's events tell Link.
type pairing struct {
	codes   atomic.Int32 // how many QR codes WhatsApp offered
	paired  chan *events.PairSuccess
	failed  chan error
	relogin chan struct{} // WhatsApp asked the new device to log in
	settled chan struct{} // WhatsApp accepted the new device's session, or refused it
	done    atomic.Bool   // Link returned: events are the link's alone
}

func signal[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// onPairingEvent is the pairing client's event handler.
func (c *Connector) onPairingEvent(cli waClient, ps *pairing, started bool, evt any) bool {
	switch e := evt.(type) {
	case *events.QR:
		ps.codes.Store(int32(len(e.Codes)))
	case *events.PairSuccess:
		signal(ps.paired, e)
	case *events.PairError:
		signal(ps.failed, e.Error)
	case *events.ManualLoginReconnect:
		if !ps.done.Load() {
			// Hang up before WhatsApp does (whatsmeow would then dial by
			// itself); Link logs in.
			go func() {
				cli.Disconnect()
				signal(ps.relogin, struct{}{})
			}()
			return true
		}
	}
	handled := true
	switch {
	case started && c.isCurrent(cli):
		// Once linked, this client is the link's: its events relay.
		handled = c.handle(evt)
	default:
		// Nothing relays this client's messages yet (or no daemon runs):
		// leave them unacknowledged so WhatsApp delivers them again to
		// the client that relays them, instead of dropping them.
		switch evt.(type) {
		case *events.Message, *events.GroupInfo:
			handled = false
		}
	}
	switch evt.(type) {
	case *events.Connected, *events.LoggedOut, *events.ClientOutdated, *events.TemporaryBan, *events.ConnectFailure, *events.StreamReplaced:
		// After the link's own handling, so its state is current.
		signal(ps.settled, struct{}{})
	}
	return handled
}

// osInfoMu guards whatsmeow's process-wide device name
// (store.DeviceProps), which the registration handshake in Connect reads:
// two links pairing at once each show under their own name.
var osInfoMu sync.Mutex

// osVersionOnce sets whatsmeow's process-wide OS version once, before any
// client exists: every client's login reads it, so setting it at each
// pairing (store.SetOSInfo) raced with the other links' logins.
var osVersionOnce sync.Once

func setOSVersion() {
	osVersionOnce.Do(func() { store.SetOSInfo(DefaultDeviceName, [3]uint32{1, 0, 0}) })
}

// linkRetryMax caps the wait between attempts while someone waits at the
// terminal to link.
const linkRetryMax = 30 * time.Second

// loginWait bounds Link's wait, after pairing, for WhatsApp to ask the
// new device to log in and to accept that login. Past it the link is
// reported all the same; the daemon keeps trying.
const loginWait = 30 * time.Second

// connectForLink dials WhatsApp for pairing. While the network is down it
// says so once per distinct error and keeps retrying with backoff until
// ctx ends (Ctrl-C).
func (c *Connector) connectForLink(ctx context.Context, cli waClient, progress func(bridge.LinkProgress)) error {
	wait := time.Second
	var lastErr string
	for {
		osInfoMu.Lock()
		store.DeviceProps.Os = proto.String(c.opts.DeviceName)
		err := cli.Connect()
		osInfoMu.Unlock()
		if err == nil {
			return nil
		}
		if msg := err.Error(); msg != lastErr {
			lastErr = msg
			progress(bridge.LinkProgress{Kind: bridge.ProgressWaiting, Reason: bridge.ReasonNetworkDown, Cause: msg})
		}
		select {
		case <-ctx.Done():
			return &bridge.LinkError{Reason: bridge.LinkNetworkDown, Service: service, Cause: err.Error()}
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
		wait = min(wait*2, c.opts.ReconnectMax, linkRetryMax)
	}
}

// finishLink records the new device and, in the daemon, makes it the
// link's client; then it logs the device in, as WhatsApp asks after
// pairing, and waits until WhatsApp accepted the session. Only then is
// the link connected, and its chats listed: before, the device is not
// logged in, and asking for its groups fails.
func (c *Connector) finishLink(ctx context.Context, cli waClient, dev *store.Device, ps *pairing, started bool, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	select {
	case e := <-ps.paired:
		// whatsmeow fills the device in before the success item; the event
		// also says the phone's platform.
		if dev.Platform == "" {
			dev.Platform = e.Platform
		}
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
	}
	if dev.ID == nil {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: "WhatsApp reported success without a device id"}
	}
	// whatsmeow gave the device its stores when it saved it, paired;
	// guard them before it logs in.
	guardContacts(dev)
	if err := c.saveLink(context.WithoutCancel(ctx), *dev.ID); err != nil {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Service: service, Cause: "linked, but the link could not be saved: " + err.Error()}
	}
	c.phone.mu.Lock()
	c.phone.at, c.phone.written, c.phone.warned = time.Now(), time.Now(), false
	c.phone.mu.Unlock()
	acct := accountOf(dev)
	c.mu.Lock()
	c.device = dev
	c.status.Account = acct
	if started {
		c.client = cli
	}
	c.mu.Unlock()
	c.log.Info("WhatsApp linked", "link", c.name, "phone", acct.Handle, "platform", acct.Device)

	// The device is linked whatever happens from here: a Ctrl-C or the
	// bound end the wait, not the link.
	wctx, cancel := context.WithTimeout(ctx, loginWait)
	defer cancel()
	select {
	case <-ps.relogin:
	case <-wctx.Done():
		cli.Disconnect()
	}
	switch {
	case started:
		// The link's connection from now on, as at a start: retried with
		// backoff, its state and the chat list following events.Connected.
		c.setState(bridge.LinkConnecting, bridge.ReasonNone, "")
		c.spawn(func(ctx context.Context) { c.connect(ctx, cli) })
	case wctx.Err() != nil:
		// Ctrl-C after the scan: the daemon's start logs the device in.
	default:
		// Log in once, so the device is complete on WhatsApp's side (its
		// prekeys uploaded), then leave it to the daemon.
		if err := c.connectForLink(wctx, cli, progress); err != nil {
			c.log.Warn("the new WhatsApp device did not log in yet; phonebridge's next start logs it in", "link", c.name, "err", err)
		}
	}
	select {
	case <-ps.settled:
	case <-wctx.Done():
	}
	if !started {
		cli.Disconnect()
		c.setState(bridge.LinkStopped, bridge.ReasonNotRunning, "")
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
		return &bridge.LinkError{Reason: bridge.LinkNotLinked, Service: service}
	}
	if !started {
		lock, err := acquireLock(c.lockPath)
		if err != nil {
			return &bridge.LinkError{Reason: bridge.LinkBusy, Service: service, Cause: err.Error()}
		}
		defer lock.release()
	}
	if !localOnly {
		if cli == nil {
			// No daemon: connect just to log out.
			cli = c.newClient(dev)
			if err := connectAndWait(ctx, cli); err != nil {
				return &bridge.LinkError{Reason: bridge.LinkNetworkDown, Service: service, Cause: err.Error()}
			}
		}
		if err := cli.Logout(ctx); err != nil {
			return &bridge.LinkError{Reason: bridge.LinkLogoutFailed, Service: service, Cause: err.Error()}
		}
	}
	// The client is no longer the link's before its keys go: a dialling
	// loop stops, and nothing reads the device while it is deleted.
	c.mu.Lock()
	c.client, c.device = nil, nil
	c.status.Account = bridge.LinkAccount{}
	c.mu.Unlock()
	if cli != nil {
		cli.Disconnect()
	}
	if localOnly {
		// By id, leaving the device struct alone: whatsmeow's goroutines
		// may still read it.
		if err := c.container.DeleteDevice(ctx, dev); err != nil {
			return fmt.Errorf("delete the keys of %s: %w", c.name, err)
		}
	}
	if err := c.forgetLink(ctx); err != nil {
		return err
	}
	c.setState(bridge.LinkUnlinked, bridge.ReasonUnlinked, "")
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
