# Writes OUT: the bytes of IN as a NUL-terminated C array named NAME.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
get_filename_component(src ${IN} NAME)
file(WRITE ${OUT} "/* generated from ${src} by cmake/embed_file.cmake */\nextern const char ${NAME}[];\nconst char ${NAME}[] = {${hex}0x00};\n")
