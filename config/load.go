package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// systemConfig is the last place Find looks; a variable so tests need not
// depend on the machine's /etc.
var systemConfig = "/etc/phonebridge/config.yaml"

// SearchPath lists, in order, where Find looks when no file is named:
// ./phonebridge.yaml, $XDG_CONFIG_HOME/phonebridge/config.yaml (XDG
// default ~/.config) and /etc/phonebridge/config.yaml.
func SearchPath() []string {
	paths := []string{"phonebridge.yaml"}
	// The XDG spec says to ignore a relative XDG_CONFIG_HOME.
	xdg := os.Getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(xdg) {
		xdg = ""
		if home, err := os.UserHomeDir(); err == nil {
			xdg = filepath.Join(home, ".config")
		}
	}
	if xdg != "" {
		paths = append(paths, filepath.Join(xdg, "phonebridge", "config.yaml"))
	}
	return append(paths, systemConfig)
}

// Find returns the config file to load: explicit if given (it must
// exist), else the first of SearchPath that exists.
func Find(explicit string) (string, error) {
	if explicit != "" {
		fi, err := os.Stat(explicit)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("config file %s: no such file", explicit)
		case err != nil:
			return "", fmt.Errorf("config file %s: %v", explicit, osReason(err))
		case fi.IsDir():
			return "", fmt.Errorf("config file %s: is a directory", explicit)
		}
		return explicit, nil
	}
	paths := SearchPath()
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no config file found (looked for %s): pass -c FILE, or start from `phonebridge config example > phonebridge.yaml`",
		strings.Join(paths, ", "))
}

// osReason strips the operation and path from an *fs.PathError, for
// messages that name the file themselves.
func osReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Load reads the file at path and Parses it.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %v", path, osReason(err))
	}
	return Parse(data, path)
}

// Parse decodes a config file's contents strictly, applies PHONEBRIDGE_*
// environment overrides and <key>_file secrets, fills defaults, resolves
// relative paths against path's directory (the working directory when
// path is "") and validates the result. Any problem, from decoding or
// validation, makes it return a *Problems listing them all, in file order.
func Parse(data []byte, path string) (*Config, error) {
	dir, err := baseDir(path)
	if err != nil {
		return nil, err
	}
	cfg := Defaults()
	cfg.Path = path

	root, syntax := parseYAML(data)
	if syntax != nil {
		return nil, &Problems{File: path, Items: []Problem{*syntax}}
	}
	d := newDecoder()
	if root != nil {
		d.root(root, &cfg)
	}
	if d.tooBig != nil {
		// What was decoded before the limit is a fragment; problems
		// with it would only bury the one that matters.
		return nil, &Problems{File: path, Items: []Problem{*d.tooBig}}
	}
	ls := configLeaves(&cfg)
	ov := d.applyEnv(&cfg, ls)
	d.readSecrets(ls, ov, dir)
	cfg.complete(dir)

	items := d.problems
	// A value that failed to decode kept its default; what the validator
	// thinks of the default would only confuse.
	failed := map[string]bool{}
	for _, p := range items {
		failed[p.Path] = true
	}
	var vs []Problem
	cfg.validate(&vs)
	for _, p := range vs {
		if failed[p.Path] {
			continue
		}
		if env, ok := ov.set[p.Path]; ok {
			p.Env = env
		} else {
			p.Line = d.lineOf(p.Path)
		}
		items = append(items, p)
	}
	if len(items) == 0 {
		return &cfg, nil
	}
	// File order; problems without a line (environment, keys absent
	// from the file) go last.
	sort.SliceStable(items, func(i, j int) bool {
		li, lj := items[i].Line, items[j].Line
		if li == 0 || lj == 0 {
			return lj == 0 && li != 0
		}
		return li < lj
	})
	return nil, &Problems{File: path, Items: capProblems(items)}
}

// baseDir is the absolute directory relative paths in the config resolve
// against.
func baseDir(path string) (string, error) {
	if path == "" {
		dir, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("config: cannot resolve relative paths: %v", err)
		}
		return dir, nil
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return "", fmt.Errorf("config file %s: cannot resolve its directory: %v", path, err)
	}
	return dir, nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// parseYAML parses data into a node tree; a syntax error becomes a single
// problem at the line yaml reports. Empty input gives a nil tree.
func parseYAML(data []byte) (*yaml.Node, *Problem) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxProblem(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return &doc, nil
	case err != nil:
		return nil, syntaxProblem(err)
	}
	return nil, &Problem{Line: extra.Line, Message: "invalid config: the file holds more than one YAML document (---); use one"}
}

func syntaxProblem(err error) *Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	p := &Problem{}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	p.Message = "invalid YAML: " + msg
	return p
}

// root decodes the document into cfg.
func (d *decoder) root(doc *yaml.Node, cfg *Config) {
	n := doc
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.problemAt(n.Line, "", "the top level must be a mapping (state_dir:, connectors:, routes:, ...), got %s", describeNode(n, false))
		return
	}
	d.structure(d.entries(n, ""), reflect.ValueOf(cfg).Elem(), "")
}

// complete fills what depends on other values: connector names, endpoint
// directions, the store path, and absolute paths.
func (c *Config) complete(dir string) {
	for name, conn := range c.Connectors {
		if conn != nil {
			conn.Name = name
		}
	}
	for i := range c.Routes {
		for j := range c.Routes[i].Endpoints {
			if c.Routes[i].Endpoints[j].Direction == "" {
				c.Routes[i].Endpoints[j].Direction = Both
			}
		}
	}
	if c.StateDir != "" {
		c.StateDir = absFrom(dir, c.StateDir)
		if c.Store.Path == "" {
			c.Store.Path = filepath.Join(c.StateDir, "phonebridge.db")
		}
	}
	if c.Store.Path != "" {
		c.Store.Path = absFrom(dir, c.Store.Path)
	}
}

func absFrom(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}
