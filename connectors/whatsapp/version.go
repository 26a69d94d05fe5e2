package whatsapp

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/store"

	"github.com/phonebridge/phonebridge/bridge"
)

// WhatsApp refuses client versions it finds too old (405, "client
// outdated"). Each whatsmeow release carries the WhatsApp Web version of
// its day, which WhatsApp stops accepting after a while; the current one
// is on WhatsApp Web's page. On a 405 the link fetches it and logs in
// with it, and reports the link outdated only when that fails too. The
// `version` option pins one by hand instead.
//
// The version is the link's own, announced by its clients' handshakes
// (GetClientPayload), not whatsmeow's process-wide store.SetWAVersion:
// several links may run in one process, and that setting does not even
// reach the version the handshake announces (the user agent's, copied
// from it once at start), only the pairing's build hash.

// versionFetchTimeout bounds the fetch of WhatsApp Web's page.
const versionFetchTimeout = 30 * time.Second

// versionState is the WhatsApp Web version a link's clients announce.
type versionState struct {
	mu     sync.Mutex
	v      store.WAVersionContainer // zero: whatsmeow's built-in
	pinned bool                     // set by the `version` option: never fetched
	// retried is set when the link logs in again with a fetched version,
	// and cleared once a login succeeds: a second refusal before that is
	// final.
	retried bool
}

// get is the version the link's clients announce.
func (s *versionState) get() store.WAVersionContainer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.v.IsZero() {
		return store.GetWAVersion()
	}
	return s.v
}

// parseVersion reads a WhatsApp Web version, "2.3000.1023456789": three
// numbers of 32 bits, as the handshake carries them.
func parseVersion(s string) (store.WAVersionContainer, error) {
	var v store.WAVersionContainer
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("must be a WhatsApp Web version such as 2.3000.1023456789 (got %q)", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return v, fmt.Errorf("must be a WhatsApp Web version such as 2.3000.1023456789: three numbers under 2^32 (got %q)", s)
		}
		v[i] = uint32(n)
	}
	if v.IsZero() {
		return v, fmt.Errorf("must be a WhatsApp Web version such as 2.3000.1023456789 (got %q)", s)
	}
	return v, nil
}

// announceVersion makes cli's handshakes announce the link's version.
// The payload is whatsmeow's own, with only the version changed.
func (c *Connector) announceVersion(cli *whatsmeow.Client) {
	cli.GetClientPayload = func() *waWa6.ClientPayload {
		p := cli.Store.GetClientPayload()
		v := c.version.get()
		p.UserAgent.AppVersion = v.ProtoAppVersion()
		if p.DevicePairingData != nil {
			// WhatsApp Web's build hash is its version's MD5.
			h := v.Hash()
			p.DevicePairingData.BuildHash = h[:]
		}
		return p
	}
}

// versionAccepted records that WhatsApp accepted the link's login: a
// later refusal may fetch the current version again.
func (c *Connector) versionAccepted() {
	c.version.mu.Lock()
	c.version.retried = false
	c.version.mu.Unlock()
}

// onClientOutdated handles WhatsApp refusing the link's client version:
// unless the version is pinned or a fetched one was refused already, it
// fetches WhatsApp Web's current version and logs in again with it.
func (c *Connector) onClientOutdated() {
	c.version.mu.Lock()
	pinned, tried := c.version.pinned, c.version.retried
	c.version.mu.Unlock()
	if pinned {
		refused := c.version.get()
		c.setState(bridge.LinkClientOutdated, bridge.ReasonNone, fmt.Sprintf("pinned version %s refused", refused))
		c.notice("WhatsApp refused link '%s' because its pinned version %s (`version` in its config) is outdated; set a newer version or remove the setting, then reload phonebridge.", c.name, refused)
		return
	}
	cli, _ := c.current()
	if cli == nil {
		return
	}
	ctx := c.runCtx()
	// Not in the event handler: the fetch may take long, and whatsmeow
	// holds its event dispatch meanwhile. Not in wg either: Stop may be
	// waiting already; the context ends it.
	go func() {
		cause := c.newerVersion(ctx, tried)
		if ctx.Err() != nil || !c.isCurrent(cli) {
			return
		}
		if cause != "" {
			c.outdated(cause)
			return
		}
		// WhatsApp closes the refused connection; the client must not
		// take it for one that is still up.
		cli.Disconnect()
		c.connect(ctx, cli)
	}()
}

// newerVersion is what the link does after WhatsApp refused its version
// as outdated: unless the version is pinned, or tried says it is a
// fetched one refused already, it fetches WhatsApp Web's current version
// and, if that is newer, makes it the link's and returns "" (log in
// again). Otherwise it returns why not, for the link's state.
func (c *Connector) newerVersion(ctx context.Context, tried bool) (cause string) {
	refused := c.version.get()
	c.version.mu.Lock()
	pinned := c.version.pinned
	c.version.mu.Unlock()
	switch {
	case pinned:
		return fmt.Sprintf("pinned version %s refused", refused)
	case tried:
		return fmt.Sprintf("WhatsApp Web's current version %s refused too", refused)
	}
	ctx, cancel := context.WithTimeout(ctx, versionFetchTimeout)
	latest, err := whatsmeow.GetLatestVersion(ctx, c.web)
	cancel()
	switch {
	case err != nil:
		return fmt.Sprintf("version %s refused; WhatsApp Web's current version could not be fetched: %v", refused, err)
	case !refused.LessThan(*latest):
		return fmt.Sprintf("version %s refused; WhatsApp Web's current version is %s", refused, latest)
	}
	c.version.mu.Lock()
	c.version.v, c.version.retried = *latest, true
	c.version.mu.Unlock()
	c.log.Warn(fmt.Sprintf("WhatsApp refused client version %s as outdated; retrying with the current version %s", refused, latest), "link", c.name)
	return ""
}

// outdated reports the link refused as outdated, for good: until
// phonebridge is updated and restarted.
func (c *Connector) outdated(cause string) {
	c.setState(bridge.LinkClientOutdated, bridge.ReasonNone, cause)
	c.notice("WhatsApp refused link '%s' because this phonebridge is outdated; update phonebridge.", c.name)
}
