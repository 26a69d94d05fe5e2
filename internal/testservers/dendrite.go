package testservers

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dendriteReadyTimeout bounds start-up; it takes under 10 s here, more
// under -race load on two cores.
const dendriteReadyTimeout = 60 * time.Second

// DendriteOptions configures StartDendrite.
type DendriteOptions struct {
	// AppServiceFiles are appservice registration files to load; relative
	// paths are taken from the server's directory, so pass absolute ones.
	AppServiceFiles []string
}

// Dendrite is a running Dendrite homeserver for server name "localhost".
type Dendrite struct {
	dir    string
	bin    string
	port   int
	secret string
	server
}

// StartDendrite configures and starts a Dendrite homeserver in a temp dir
// and waits until its client API answers. It is stopped in t.Cleanup.
func StartDendrite(t testing.TB, opts DendriteOptions) *Dendrite {
	t.Helper()
	dirs := []string{goBin()}
	d := &Dendrite{
		dir:    t.TempDir(),
		bin:    findBinary(t, "dendrite", dirs...),
		secret: randomHex(t, 16),
		server: server{name: "dendrite"},
	}
	run := func(name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(findBinary(t, name, dirs...), args...)
		cmd.Dir = d.dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("testservers: %s: %v\n%s", name, err, stderr.String())
		}
		return out
	}
	run("generate-keys", "--private-key", "matrix_key.pem")
	conf := string(run("generate-config", "-dir", "./data", "-server", "localhost"))
	conf, err := editDendriteConfig(conf, d.secret, opts.AppServiceFiles)
	if err != nil {
		t.Fatalf("testservers: dendrite config: %v", err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "dendrite.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)

	// The free port can be taken before Dendrite binds it: one retry.
	for try := 0; ; try++ {
		d.port = FreePort(t)
		err := d.start()
		if err == nil {
			return d
		}
		if try == 1 || !d.exited() {
			t.Fatalf("testservers: dendrite on port %d: %v\nlog tail:\n%s", d.port, err, logTail(d.logPath(), 40))
		}
	}
}

// editDendriteConfig makes the generated config fit tests: no federation, a
// registration shared secret, no client API rate limiting, appservices.
func editDendriteConfig(conf, secret string, appservices []string) (string, error) {
	lines := strings.Split(conf, "\n")
	replace := func(from int, old, new string) (int, error) {
		for i := from; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == old {
				indent := lines[i][:len(lines[i])-len(strings.TrimLeft(lines[i], " "))]
				lines[i] = indent + new
				return i, nil
			}
		}
		return 0, fmt.Errorf("no line %q after line %d", old, from+1)
	}
	if _, err := replace(0, "disable_federation: false", "disable_federation: true"); err != nil {
		return "", err
	}
	if _, err := replace(0, `registration_shared_secret: ""`, "registration_shared_secret: "+strconv.Quote(secret)); err != nil {
		return "", err
	}
	// The default allows 5 requests, then makes clients wait 500 ms.
	i, err := replace(0, "client_api:", "client_api:")
	if err == nil {
		i, err = replace(i, "rate_limiting:", "rate_limiting:")
	}
	if err == nil {
		_, err = replace(i, "enabled: true", "enabled: false")
	}
	if err != nil {
		return "", err
	}
	if len(appservices) > 0 {
		quoted := make([]string, len(appservices))
		for i, f := range appservices {
			quoted[i] = strconv.Quote(f)
		}
		i, err := replace(0, "app_service_api:", "app_service_api:")
		if err == nil {
			_, err = replace(i, "config_files: []", "config_files: ["+strings.Join(quoted, ", ")+"]")
		}
		if err != nil {
			return "", err
		}
	}
	return strings.Join(lines, "\n"), nil
}

func (d *Dendrite) logPath() string { return filepath.Join(d.dir, "dendrite.log") }

func (d *Dendrite) start() error {
	p, err := startProc(d.dir, d.logPath(), d.bin,
		"--config", "dendrite.yaml", "--http-bind-address", fmt.Sprintf("127.0.0.1:%d", d.port))
	if err != nil {
		return err
	}
	d.set(p)
	client := &http.Client{Timeout: 2 * time.Second}
	return waitReady(p, dendriteReadyTimeout, func() error {
		resp, err := client.Get(d.URL() + "/_matrix/client/versions")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /_matrix/client/versions: %s", resp.Status)
		}
		return nil
	})
}

// URL is the homeserver's base URL, e.g. http://127.0.0.1:PORT.
func (d *Dendrite) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", d.port) }

// ServerName is the Matrix server name in user and room ids.
func (d *Dendrite) ServerName() string { return "localhost" }

// Dir is the server's directory: config, keys, data and dendrite.log.
func (d *Dendrite) Dir() string { return d.dir }

// Kill ends the server with SIGKILL, as a crash would. Dendrite 0.13.8 can
// then lose its embedded NATS streams and skip events accepted after the
// restart; a test that must see every event uses Stop or Restart instead.
func (d *Dendrite) Kill() { d.server.Kill() }

// Restart stops the server if it still runs and starts it again on the same
// directory and port, so data, tokens and URL survive.
func (d *Dendrite) Restart(t testing.TB) {
	t.Helper()
	d.Stop()
	if err := d.start(); err != nil {
		t.Fatalf("testservers: dendrite restart on port %d: %v\nlog tail:\n%s", d.port, err, logTail(d.logPath(), 40))
	}
}

// Register creates a user through the shared-secret admin endpoint and
// returns its user id and an access token.
func (d *Dendrite) Register(t testing.TB, localpart, password string, admin bool) (userID, accessToken string) {
	t.Helper()
	const path = "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := d.adminJSON(http.MethodGet, path, nil, &nonce); err != nil {
		t.Fatalf("testservers: register %s: %v", localpart, err)
	}
	adminFlag := "notadmin"
	if admin {
		adminFlag = "admin"
	}
	mac := hmac.New(sha1.New, []byte(d.secret))
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00" + adminFlag))
	req := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    admin,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if err := d.adminJSON(http.MethodPost, path, req, &resp); err != nil {
		t.Fatalf("testservers: register %s: %v", localpart, err)
	}
	if resp.UserID == "" || resp.AccessToken == "" {
		t.Fatalf("testservers: register %s: no user id or token in the answer", localpart)
	}
	return resp.UserID, resp.AccessToken
}

func (d *Dendrite) adminJSON(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.URL()+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return json.Unmarshal(b, out)
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
