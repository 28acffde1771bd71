// Command pgshard is the pgshard CLI: the proxy server, the local demo
// cluster and operator tools. Each command group lives in its own file;
// the logic lives in library packages.
package main
