# mount(8) runs the helper of `mount -t mcorefs` only from /sbin (also /sbin/fs.d, /sbin/fs), never
# from PATH, so PREFIX/sbin/mount.mcorefs alone is not found with the default prefix /usr/local.
# This install step links /sbin/mount.mcorefs -> PREFIX/sbin/mount.mcorefs (under $DESTDIR when set).
#   MCOREFS_MOUNT_HELPER_LINK  AUTO (default): only for the system prefixes /usr/local and /usr,
#                              so a private prefix never touches /sbin; ON: always; OFF: never.
# An existing file that is not a symlink is left alone (with a warning); an old symlink is replaced.
# `mount -t fuse.mcorefs` needs no link: mount.fuse3 runs `mcorefs` from mount(8)'s PATH, which
# includes /usr/local/bin and /usr/bin.
set(MCOREFS_MOUNT_HELPER_LINK AUTO CACHE STRING "Link /sbin/mount.mcorefs to the installed helper: AUTO, ON or OFF")
set_property(CACHE MCOREFS_MOUNT_HELPER_LINK PROPERTY STRINGS AUTO ON OFF)

install(CODE "
  set(_mode \"${MCOREFS_MOUNT_HELPER_LINK}\")
  get_filename_component(_prefix \"\${CMAKE_INSTALL_PREFIX}\" ABSOLUTE)
  set(_target \"\${_prefix}/${CMAKE_INSTALL_SBINDIR}/mount.mcorefs\")
  set(_link \"\$ENV{DESTDIR}/sbin/mount.mcorefs\")
  set(_want OFF)
  if(_mode STREQUAL \"ON\" OR (_mode STREQUAL \"AUTO\" AND (_prefix STREQUAL \"/usr/local\" OR _prefix STREQUAL \"/usr\")))
    set(_want ON)
  endif()
  get_filename_component(_real_link \"\${_link}\" REALPATH)
  get_filename_component(_real_target \"\$ENV{DESTDIR}\${_target}\" REALPATH)
  if(NOT _want)
    message(STATUS \"Not linking /sbin/mount.mcorefs (prefix \${_prefix}); for mount -t mcorefs: ln -s \${_target} /sbin/mount.mcorefs\")
  elseif(_real_link STREQUAL _real_target)
    message(STATUS \"Up-to-date: \${_link} (mount(8) finds the helper there)\")
  elseif(EXISTS \"\${_link}\" AND NOT IS_SYMLINK \"\${_link}\")
    message(WARNING \"\${_link} exists and is not a symlink: left alone, so mount -t mcorefs runs that file\")
  else()
    get_filename_component(_dir \"\${_link}\" DIRECTORY)
    file(MAKE_DIRECTORY \"\${_dir}\")
    file(REMOVE \"\${_link}\")
    file(CREATE_LINK \"\${_target}\" \"\${_link}\" RESULT _rc SYMBOLIC)
    if(_rc EQUAL 0)
      message(STATUS \"Linking: \${_link} -> \${_target} (where mount(8) looks for mount.mcorefs)\")
      list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${_link}\")
    else()
      message(WARNING \"cannot link \${_link} -> \${_target}: \${_rc}; mount -t mcorefs needs it\")
    endif()
  endif()
")
