// Command gost is the sockslab lab's gost peer: gost 3.2.6's start-up sequence, written anew,
// over the go-gost/x v0.8.1 and go-gost/core v0.3.3 libraries that gost 3.2.6 itself links.
//
// Why not the upstream binary: the Go module proxy does not serve github.com/go-gost/gost, but
// it serves those libraries, and everything a gost 3.2.6 service does (URL and YAML parsing,
// handlers, listeners, dialers, connectors) lives in them. What upstream's main adds is the
// sequence reproduced here: parse flags, build the configuration with x's parser (-C file and
// -L/-F URLs), print it (-O) or load it into x's registries, serve every service, reload on
// SIGHUP, and close everything on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	_ "net/http/pprof" // the optional profiling service serves the default mux
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/go-gost/core/auth"
	"github.com/go-gost/core/logger"
	"github.com/go-gost/core/service"
	apisvc "github.com/go-gost/x/api/service"
	xauth "github.com/go-gost/x/auth"
	"github.com/go-gost/x/config"
	"github.com/go-gost/x/config/loader"
	authparser "github.com/go-gost/x/config/parsing/auth"
	"github.com/go-gost/x/config/parsing/parser"
	xlogger "github.com/go-gost/x/logger"
	xmetrics "github.com/go-gost/x/metrics"
	metricssvc "github.com/go-gost/x/metrics/service"
	"github.com/go-gost/x/registry"
)

// upstreamVersion is the gost release whose start-up and dependency set this binary reproduces.
const upstreamVersion = "3.2.6"

// repeated collects every occurrence of a repeatable flag (-L and -F may be given many times).
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// options are gost 3.2.6's command-line flags.
type options struct {
	services    repeated
	nodes       repeated
	cfgFile     string
	output      string
	debug       bool
	trace       bool
	version     bool
	apiAddr     string
	metricsAddr string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("gost", flag.ContinueOnError)
	fs.Var(&o.services, "L", "service list")
	fs.Var(&o.nodes, "F", "chain node list")
	fs.StringVar(&o.cfgFile, "C", "", "configuration file")
	fs.BoolVar(&o.version, "V", false, "print version")
	fs.StringVar(&o.output, "O", "", "output format, one of yaml|json format")
	fs.BoolVar(&o.debug, "D", false, "debug mode")
	fs.BoolVar(&o.trace, "DD", false, "trace mode")
	fs.StringVar(&o.apiAddr, "api", "", "api service address")
	fs.StringVar(&o.metricsAddr, "metrics", "", "metrics service address")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (services are given with -L, chain nodes with -F)", fs.Arg(0))
	}
	return o, nil
}

// versionText is what -V prints: that this is not upstream's binary, and the library versions
// actually linked (from the build info, so it cannot drift from go.mod).
func versionText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gost %s start-up over go-gost/x v0.8.1 (sockslab gost-peer, not upstream's binary) (%s %s/%s)\n",
		upstreamVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprintf(&b, "main module: %s\n", bi.Main.Path)
		for _, m := range bi.Deps {
			if strings.HasPrefix(m.Path, "github.com/go-gost/") {
				v := m.Version
				if m.Replace != nil {
					v += " => " + m.Replace.Path + " " + m.Replace.Version
				}
				fmt.Fprintf(&b, "  %s %s\n", m.Path, v)
			}
		}
	}
	return b.String()
}

// splitWorkers implements gost's ` -- ` separator: `gost -L a -- -L b` runs one child gost per
// group. It returns nil when there is no separator.
func splitWorkers(args []string) [][]string {
	var groups [][]string
	cur := []string{}
	found := false
	for _, a := range args {
		if a == "--" {
			found = true
			groups = append(groups, cur)
			cur = []string{}
			continue
		}
		cur = append(cur, a)
	}
	if !found {
		return nil
	}
	return append(groups, cur)
}

// runWorkers starts one child per group; the first to end cancels the others (as upstream
// does), and the exit status is that of the last child to report one.
func runWorkers(groups [][]string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		code int
	)
	for id, g := range groups {
		wg.Add(1)
		go func(id int, g []string) {
			defer wg.Done()
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], g...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			cmd.Env = append(os.Environ(), fmt.Sprintf("_GOST_ID=%d", id))
			err := cmd.Run()
			mu.Lock()
			defer mu.Unlock()
			if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
				code = cmd.ProcessState.ExitCode()
			} else if err != nil && code == 0 {
				code = 1
			}
		}(id, g)
	}
	wg.Wait()
	return code
}

// program owns what is running: the registry's services plus the optional api, metrics and
// profiling servers.
type program struct {
	opts      *options
	api       service.Service
	metrics   service.Service
	profiling *http.Server
}

// configure builds the configuration with x's parser (file, then -L/-F, then environment) and
// loads it into x's registries.
func (p *program) configure() (*config.Config, error) {
	cfg, err := parser.Parse()
	if err != nil {
		return nil, err
	}
	config.Set(cfg)
	if err := loader.Load(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// serve starts every registered service and the side servers the configuration asks for,
// closing those of an earlier configuration first (reload).
func (p *program) serve(cfg *config.Config) error {
	for _, s := range registry.ServiceRegistry().GetAll() {
		go s.Serve()
	}

	if p.api != nil {
		p.api.Close()
		p.api = nil
	}
	if cfg.API != nil {
		s, err := newAPIService(cfg.API)
		if err != nil {
			return err
		}
		p.api = s
		go serveSide(s, "@api")
	}

	if p.metrics != nil {
		p.metrics.Close()
		p.metrics = nil
	}
	if cfg.Metrics != nil && cfg.Metrics.Addr != "" {
		s, err := newMetricsService(cfg.Metrics)
		if err != nil {
			return err
		}
		p.metrics = s
		xmetrics.Enable(true)
		go serveSide(s, "@metrics")
	}

	if p.profiling != nil {
		p.profiling.Close()
		p.profiling = nil
	}
	if cfg.Profiling != nil {
		addr := cfg.Profiling.Addr
		if addr == "" {
			addr = ":6060"
		}
		s := &http.Server{Addr: addr}
		p.profiling = s
		go func() {
			l := logger.Default().WithFields(map[string]any{"kind": "service", "service": "@profiling"})
			l.Info("listening on ", addr)
			if err := s.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				l.Error(err)
			}
		}()
	}
	return nil
}

func serveSide(s service.Service, name string) {
	defer s.Close()
	l := logger.Default().WithFields(map[string]any{"kind": "service", "service": name})
	l.Info("listening on ", s.Addr())
	if err := s.Serve(); !errors.Is(err, http.ErrServerClosed) {
		l.Error(err)
	}
}

// stop closes every service so listeners are released before the process exits.
func (p *program) stop() {
	for name, s := range registry.ServiceRegistry().GetAll() {
		s.Close()
		logger.Default().Debugf("service %s shutdown", name)
	}
	if p.api != nil {
		p.api.Close()
	}
	if p.metrics != nil {
		p.metrics.Close()
	}
	if p.profiling != nil {
		p.profiling.Close()
	}
}

func newAPIService(c *config.APIConfig) (service.Service, error) {
	var authers []auth.Authenticator
	if a := authparser.ParseAutherFromAuth(c.Auth); a != nil {
		authers = append(authers, a)
	}
	if c.Auther != "" {
		authers = append(authers, registry.AutherRegistry().Get(c.Auther))
	}
	var a auth.Authenticator
	if len(authers) > 0 {
		a = xauth.AuthenticatorGroup(authers...)
	}
	network, addr := splitUnix(c.Addr)
	return apisvc.NewService(network, addr,
		apisvc.PathPrefixOption(c.PathPrefix),
		apisvc.AccessLogOption(c.AccessLog),
		apisvc.AutherOption(a),
	)
}

func newMetricsService(c *config.MetricsConfig) (service.Service, error) {
	a := authparser.ParseAutherFromAuth(c.Auth)
	if c.Auther != "" {
		a = registry.AutherRegistry().Get(c.Auther)
	}
	network, addr := splitUnix(c.Addr)
	return metricssvc.NewService(network, addr,
		metricssvc.PathOption(c.Path),
		metricssvc.AutherOption(a),
	)
}

// splitUnix maps `unix:///path` to a unix socket, anything else to TCP.
func splitUnix(addr string) (string, string) {
	if rest, ok := strings.CutPrefix(addr, "unix://"); ok {
		return "unix", rest
	}
	return "tcp", addr
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lshortfile | log.Lmicroseconds)
	args := os.Args[1:]
	if groups := splitWorkers(args); groups != nil {
		os.Exit(runWorkers(groups))
	}

	opts, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gost:", err)
		os.Exit(2)
	}
	if opts.version {
		fmt.Print(versionText())
		return
	}

	logger.SetDefault(xlogger.NewLogger())
	parser.Init(parser.Args{
		CfgFile:     opts.cfgFile,
		Services:    opts.services,
		Nodes:       opts.nodes,
		Debug:       opts.debug,
		Trace:       opts.trace,
		ApiAddr:     opts.apiAddr,
		MetricsAddr: opts.metricsAddr,
	})

	// -O prints the configuration x's parser built, before anything is loaded or listens.
	if opts.output != "" {
		cfg, err := parser.Parse()
		if err != nil {
			fmt.Fprintln(os.Stderr, "gost:", err)
			os.Exit(1)
		}
		if err := cfg.Write(os.Stdout, opts.output); err != nil {
			fmt.Fprintln(os.Stderr, "gost:", err)
			os.Exit(1)
		}
		return
	}

	// Subscribe before starting, so a signal that arrives during start-up is not lost.
	stopSig := make(chan os.Signal, 1)
	signal.Notify(stopSig, syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	p := &program{opts: opts}
	cfg, err := p.configure()
	if err != nil {
		logger.Default().Fatal(err)
	}
	if err := p.serve(cfg); err != nil {
		logger.Default().Fatal(err)
	}

	for {
		select {
		case sig := <-stopSig:
			logger.Default().Infof("%s: shutting down", sig)
			p.stop()
			return
		case <-hup:
			// SIGHUP re-reads the configuration, as upstream does.
			cfg, err := p.configure()
			if err == nil {
				err = p.serve(cfg)
			}
			if err != nil {
				logger.Default().Error(err)
			} else {
				logger.Default().Info("config reloaded")
			}
		}
	}
}
