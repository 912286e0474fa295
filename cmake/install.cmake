# What `cmake --install` puts where. Two components:
#   dev     the libraries (static), public headers, CMake package (find_package(slimta
#           CONFIG) -> slimta:: targets) and pkg-config file (slimta.pc)
#   daemon  slimta-queue, its systemd unit, /etc/slimta/slimta.toml, /var/spool/slimta,
#           man pages, the Debian copyright and changelog
# Configure with -DCMAKE_INSTALL_PREFIX=/usr for a system install: /etc and /var then
# come from GNUInstallDirs' FULL_SYSCONFDIR and FULL_LOCALSTATEDIR.
include(CMakePackageConfigHelpers)

set(SLIMTA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/slimta)
set(SLIMTA_SYSTEMD_UNIT_DIR lib/systemd/system CACHE STRING
  "Where the systemd unit goes (relative: under the prefix)")

# --- dev ---------------------------------------------------------------------------
install(TARGETS ${SLIMTA_LIBRARIES} EXPORT slimtaTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
set(headers ascii clock envelope errors host_port storage storage_wrapper open_storage memory_storage
  disk_storage metrics timed_storage
  queue reception routing_relay shaping)
if(SLIMTA_WITH_REDIS)
  list(APPEND headers redis_storage)
endif()
if(SLIMTA_WITH_CLOUD)
  list(APPEND headers cloud_storage)
endif()
if(SLIMTA_WITH_SMTP)
  list(APPEND headers ip_networks mx_relay smtp_relay smtp_server user_database)
endif()
list(TRANSFORM headers PREPEND ${PROJECT_SOURCE_DIR}/include/slimta/)
list(TRANSFORM headers APPEND .h)
install(FILES ${headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/slimta COMPONENT dev)

install(EXPORT slimtaTargets NAMESPACE slimta:: DESTINATION ${SLIMTA_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(cmake/slimtaConfig.cmake.in
  ${PROJECT_BINARY_DIR}/slimtaConfig.cmake INSTALL_DESTINATION ${SLIMTA_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/slimtaConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/slimtaConfig.cmake ${PROJECT_BINARY_DIR}/slimtaConfigVersion.cmake
  DESTINATION ${SLIMTA_CMAKE_DIR} COMPONENT dev)

# slimta.pc: the libraries are static, so Libs names everything they link.
set(pc_libs "-lslimta")
set(pc_requires "fmt spdlog zlib")
foreach(part REDIS CLOUD SMTP)
  if(SLIMTA_WITH_${part})
    string(TOLOWER ${part} lib)
    string(APPEND pc_libs " -lslimta_${lib}")
  endif()
endforeach()
string(APPEND pc_libs " -lslimta_memory -lslimta_disk -lslimta_queue -lslimta_metrics -lslimta_core")
if(SLIMTA_WITH_REDIS)
  string(APPEND pc_requires " hiredis")
endif()
if(SLIMTA_WITH_CLOUD)
  string(APPEND pc_requires " libcurl")
endif()
if(SLIMTA_WITH_REDIS OR SLIMTA_WITH_CLOUD OR SLIMTA_WITH_SMTP)
  string(APPEND pc_requires " openssl")
endif()
if(SLIMTA_WITH_SMTP)
  string(APPEND pc_libs " -lresolv -lcrypt")
endif()
string(APPEND pc_libs " -pthread")
# Relocatable: the prefix is found from where the .pc file is.
file(RELATIVE_PATH pc_prefix "${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig"
  "${CMAKE_INSTALL_PREFIX}")
configure_file(cmake/slimta.pc.in ${PROJECT_BINARY_DIR}/slimta.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/slimta.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  COMPONENT dev)

# --- daemon ------------------------------------------------------------------------
if(SLIMTA_WITH_SMTP)
  install(TARGETS slimta-queue RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT daemon)
  set(SLIMTA_SBINDIR ${CMAKE_INSTALL_FULL_SBINDIR})
  set(SLIMTA_SYSCONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR}/slimta)
  set(SLIMTA_SPOOL ${CMAKE_INSTALL_FULL_LOCALSTATEDIR}/spool/slimta)
  # The configuration a bare `slimta-queue list` reads once the package is installed.
  target_compile_definitions(slimta-queue PRIVATE
    SLIMTA_DEFAULT_CONFIG="${SLIMTA_SYSCONFDIR}/slimta.toml")
  configure_file(packaging/slimta-queue.service.in ${PROJECT_BINARY_DIR}/slimta-queue.service @ONLY)
  configure_file(packaging/slimta.toml.in ${PROJECT_BINARY_DIR}/slimta.toml @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/slimta-queue.service DESTINATION ${SLIMTA_SYSTEMD_UNIT_DIR}
    COMPONENT daemon)
  install(FILES ${PROJECT_BINARY_DIR}/slimta.toml DESTINATION ${SLIMTA_SYSCONFDIR}
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ COMPONENT daemon)
  install(DIRECTORY DESTINATION ${SLIMTA_SPOOL} COMPONENT daemon)

  # sendmail and mailq for cron, PHP's mail() and mailx: links to slimta-queue, which
  # acts as sendmail by the name it is called by. Their own package (slimta-cpp-sendmail),
  # since it takes the place of the system's MTA (Debian policy 11.6: provides, conflicts
  # with and replaces mail-transport-agent), while slimta-cpp installs beside Postfix.
  set(links ${PROJECT_BINARY_DIR}/sendmail-links)
  file(MAKE_DIRECTORY ${links}/sbin ${links}/bin ${links}/lib)
  file(CREATE_LINK slimta-queue ${links}/sbin/sendmail SYMBOLIC)
  file(CREATE_LINK ../sbin/slimta-queue ${links}/bin/mailq SYMBOLIC)
  file(CREATE_LINK ../sbin/sendmail ${links}/lib/sendmail SYMBOLIC)
  install(FILES ${links}/sbin/sendmail DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT sendmail)
  install(FILES ${links}/bin/mailq DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT sendmail)
  install(FILES ${links}/lib/sendmail DESTINATION lib COMPONENT sendmail)
  # Their manual: slimta-queue(8), whose sendmail command they are.
  file(MAKE_DIRECTORY ${links}/man1)
  foreach(name sendmail mailq)
    file(CREATE_LINK ../man8/slimta-queue.8.gz ${links}/man1/${name}.1.gz SYMBOLIC)
    install(FILES ${links}/man1/${name}.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1
      COMPONENT sendmail)
  endforeach()

  # Man pages and the Debian documentation files, compressed as Debian wants them.
  set(gz_files)
  foreach(page slimta-queue.8 slimta.toml.5)
    string(REGEX REPLACE ".*\\." "" section ${page})
    set(gz ${PROJECT_BINARY_DIR}/man/${page}.gz)
    add_custom_command(OUTPUT ${gz}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
      COMMAND gzip -9n < ${PROJECT_SOURCE_DIR}/doc/man/${page} > ${gz}
      DEPENDS ${PROJECT_SOURCE_DIR}/doc/man/${page} VERBATIM)
    install(FILES ${gz} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT daemon)
    list(APPEND gz_files ${gz})
  endforeach()
  set(changelog ${PROJECT_BINARY_DIR}/changelog.Debian.gz)
  add_custom_command(OUTPUT ${changelog}
    COMMAND gzip -9n < ${PROJECT_SOURCE_DIR}/packaging/changelog.Debian > ${changelog}
    DEPENDS ${PROJECT_SOURCE_DIR}/packaging/changelog.Debian VERBATIM)
  add_custom_target(slimta_docs ALL DEPENDS ${gz_files} ${changelog})
  install(FILES ${changelog} packaging/copyright
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/slimta-cpp COMPONENT daemon)
  install(FILES ${changelog} packaging/copyright
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/libslimta-cpp-dev COMPONENT dev)
  install(FILES ${changelog} packaging/copyright
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/slimta-cpp-sendmail COMPONENT sendmail)
  # The lintian tags left, each with its reason (packaging/lintian-overrides.*).
  foreach(package slimta-cpp libslimta-cpp-dev slimta-cpp-sendmail)
    set(component daemon)
    if(package STREQUAL libslimta-cpp-dev)
      set(component dev)
    elseif(package STREQUAL slimta-cpp-sendmail)
      set(component sendmail)
    endif()
    install(FILES packaging/lintian-overrides.${package}
      DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides RENAME ${package}
      COMPONENT ${component})
  endforeach()
endif()

include(cmake/package.cmake)
