# `cpack -G DEB` (scripts/package.sh): three Debian packages from the install components,
#   slimta-cpp           the daemon component (slimta-queue, unit, config, spool, man pages)
#   slimta-cpp-sendmail  the sendmail component (/usr/sbin/sendmail, mailq: the system's MTA)
#   libslimta-cpp-dev    the dev component (static libraries, headers, CMake, pkg-config)
# Build them from a tree configured with -DCMAKE_INSTALL_PREFIX=/usr.
set(CPACK_PACKAGE_NAME slimta-cpp)
set(CPACK_PACKAGE_VENDOR "slimta-cpp developers")
set(CPACK_PACKAGE_CONTACT "slimta-cpp developers <slimta-cpp@example.org>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL daemon sendmail dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)

set(CPACK_DEBIAN_DAEMON_PACKAGE_NAME slimta-cpp)
set(CPACK_DEBIAN_DAEMON_PACKAGE_SECTION mail)
set(CPACK_DEBIAN_DAEMON_PACKAGE_DEPENDS "adduser")
set(CPACK_COMPONENT_DAEMON_DESCRIPTION "SMTP relay with a durable, shareable mail queue
slimta-queue receives mail over SMTP, keeps it in a queue that survives a crash
or a power loss, and delivers it to a smarthost or to each domain's MX hosts,
with retries, bounces and holds. The queue is kept on local disk, or shared by
several hosts through Redis or Amazon S3 and SQS. It implements the queue
storage of python-slimta.

This package has the slimta-queue program, its systemd unit (not enabled) and
the configuration /etc/slimta/slimta.toml.")
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/postinst ${PROJECT_SOURCE_DIR}/packaging/postrm
  ${PROJECT_SOURCE_DIR}/packaging/conffiles)
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_SENDMAIL_PACKAGE_NAME slimta-cpp-sendmail)
set(CPACK_DEBIAN_SENDMAIL_PACKAGE_SECTION mail)
set(CPACK_DEBIAN_SENDMAIL_PACKAGE_DEPENDS
  "slimta-cpp (= ${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE})")
set(CPACK_DEBIAN_SENDMAIL_PACKAGE_PROVIDES mail-transport-agent)
set(CPACK_DEBIAN_SENDMAIL_PACKAGE_CONFLICTS mail-transport-agent)
set(CPACK_DEBIAN_SENDMAIL_PACKAGE_REPLACES mail-transport-agent)
set(CPACK_COMPONENT_SENDMAIL_DESCRIPTION "slimta-queue as the system's sendmail and mailq
The links /usr/sbin/sendmail, /usr/lib/sendmail and /usr/bin/mailq to
slimta-queue, which takes sendmail's options and exit codes when called so:
cron, PHP's mail() and mailx send through the slimta-queue service. It takes
the place of the system's mail transport agent (Postfix, Exim).")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libslimta-cpp-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libfmt-dev, libspdlog-dev, zlib1g-dev, libhiredis-dev, libcurl4-openssl-dev, libssl-dev, nlohmann-json3-dev, libcrypt-dev")
set(CPACK_COMPONENT_DEV_DESCRIPTION "durable mail queue library (development files)
The slimta-cpp libraries: a mail transfer agent's queue of messages awaiting
delivery on local disk, Redis or S3+SQS, the queue engine and the SMTP server
and relays, as static libraries with their headers, a CMake package
(find_package(slimta CONFIG)) and a pkg-config file.")

include(CPack)
