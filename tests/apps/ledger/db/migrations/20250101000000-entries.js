"use strict";

module.exports = {
  up: async (queryInterface, Sequelize) => {
    await queryInterface.createTable("entries", {
      id: { type: Sequelize.BIGINT, primaryKey: true, autoIncrement: true },
      memo: { type: Sequelize.STRING(200), allowNull: false },
      cents: { type: Sequelize.BIGINT, allowNull: false },
    });
  },
  down: async (queryInterface) => queryInterface.dropTable("entries"),
};
